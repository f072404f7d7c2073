"""A deployment's record: `$ESCROW_DATA_DIR/deployment.json` (mode 0600), written by `escrow init`.

It says that the data directory is an initialised deployment and fixes what must not drift
between starts: the checkpoint origin (the name the audit log is signed under; recorded once, at
init, and never changed). It also keeps the public URL given at init and the one the broker last
served at (`escrow serve` records it), so that operator commands run without
`ESCROW_PUBLIC_URL` (login links) name the broker where it actually is.

Operator commands refuse a data directory without it (`require_deployment`): run elsewhere, they
would otherwise make a second, empty deployment in `./escrow-data`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from broker.errors import ConfigError

DEPLOYMENT_FILE = "deployment.json"
FORMAT = 1


class NotADeployment(ConfigError):
    """An operator command was pointed at a folder that `escrow init` did not set up."""

    title = "not an escrow deployment"


@dataclass(frozen=True)
class Deployment:
    data_dir: str
    origin: str
    public_url_at_init: str
    public_url: str  # where the broker was last served (ESCROW_PUBLIC_URL, or serve's host:port)
    initialised_at: str
    format: int = FORMAT


def deployment_path(data_dir: Path) -> Path:
    return data_dir / DEPLOYMENT_FILE


def read_deployment(data_dir: Path) -> Deployment | None:
    """The record in `data_dir`, None when there is none; ConfigError when it is unreadable."""
    path = deployment_path(data_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(
            f"cannot read the deployment record {path}: {error.strerror}",
            hint="run escrow as the user that ran `escrow init` (the file is mode 0600)",
        ) from None
    try:
        document = json.loads(text)
        if document.get("format") != FORMAT:
            raise ValueError(f"format {document.get('format')!r}")
        deployment = Deployment(
            data_dir=str(document["data_dir"]),
            origin=str(document["origin"]),
            public_url_at_init=str(document["public_url_at_init"]),
            public_url=str(document["public_url"]),
            initialised_at=str(document["initialised_at"]),
        )
    except (ValueError, KeyError, AttributeError) as error:
        raise ConfigError(
            f"the deployment record {path} is damaged ({error})",
            hint="restore it from a backup: its `origin` names the audit log and must not "
            "change (the first line of any checkpoint in audit/checkpoints/ of the store shows it)",
        ) from None
    return deployment


def write_deployment(data_dir: Path, deployment: Deployment) -> None:
    """Replace the record atomically (a crash leaves the old one or the new one), mode 0600."""
    data_dir.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".deployment-", dir=data_dir)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(asdict(deployment), handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, deployment_path(data_dir))
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def record_deployment(data_dir: Path, origin: str, public_url: str) -> tuple[Deployment, bool]:
    """The record, written now if there was none; True when it was written."""
    existing = read_deployment(data_dir)
    if existing is not None:
        return existing, False
    made = Deployment(
        data_dir=str(data_dir),
        origin=origin,
        public_url_at_init=public_url,
        public_url=public_url,
        initialised_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_deployment(data_dir, made)
    return made, True


def record_public_url(data_dir: Path, public_url: str) -> None:
    """Note where the broker is served now (operator commands' links follow it)."""
    existing = read_deployment(data_dir)
    if existing is not None and existing.public_url != public_url:
        write_deployment(data_dir, replace(existing, public_url=public_url))


def require_deployment(data_dir: Path) -> Deployment:
    """The record of the deployment in `data_dir`; NotADeployment, saying how to point at the
    right folder or make a new deployment, when there is none."""
    found = read_deployment(data_dir)
    if found is not None:
        return found
    if (data_dir / "keys" / "url-signing.key").exists():
        raise NotADeployment(
            f"{data_dir} was set up by an earlier version and has no {DEPLOYMENT_FILE} yet",
            hint=f"run `escrow init` once with ESCROW_DATA_DIR={data_dir} to record it (it keeps "
            "the keys and data, and takes the audit log's origin from its checkpoints)",
        )
    what = (
        "does not exist"
        if not data_dir.exists()
        else f"is not an initialised deployment (no {DEPLOYMENT_FILE} in it)"
    )
    raise NotADeployment(
        f"the data directory {data_dir} {what}; nothing was done",
        hint="point ESCROW_DATA_DIR at the deployment's data directory (the folder "
        "`escrow init` printed), or run `escrow init` to make a new deployment there",
    )
