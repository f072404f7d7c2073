"""Every client remembers the newest audit checkpoint it saw of each broker, and on each contact
checks that the broker's log still extends it (as the Go checksum database client does).

So a broker that removes or rewrites history is caught by its own users on their next command,
not only by auditors. Stored in `<config dir>/checkpoints.json` (0600) beside the pins; the
checkpoint key comes from the pins, never from the broker's answer of the moment.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.auditlog.checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from broker.auditlog.proofs import ProofError
from broker.auditlog.verifier import verify_extension
from broker.client.http import BrokerClient
from broker.client.local import config_dir, read_json, write_private
from broker.client.pins import broker_id, load_pins
from broker.errors import EscrowError, TamperDetected

CHECKPOINTS_FILE = "checkpoints.json"
_HINT = (
    "the broker's audit log no longer extends what you saw before: keep {path} as evidence and "
    "tell the escrow's auditors; do not trust this broker until they have looked"
)


@dataclass(frozen=True)
class LogCheck:
    previous: int | None  # the size seen before, None on first contact
    current: Checkpoint


def checkpoints_path(directory: Path | None = None) -> Path:
    return (directory or config_dir()) / CHECKPOINTS_FILE


def check_log(client: BrokerClient, directory: Path | None = None) -> LogCheck:
    """Fetch the newest checkpoint, verify it with the pinned key, prove it extends the saved
    one, then save it. TamperDetected (naming both sizes) if any of that fails."""
    name = broker_id(client.base_url)
    verifier = pinned_verifier_key(client.base_url, directory)
    current = _verified(client.get("/api/v1/audit/checkpoint", auth=False)["note"], verifier)
    saved = _load(directory).get(name)
    previous = None
    if saved is not None:
        previous = int(saved["size"])
        _check_extends(client, _saved_root(saved), previous, current, directory)
    if saved is None or current.size > previous:  # type: ignore[operator]
        _save(name, current, directory)
    client.checkpoint = current
    return LogCheck(previous=previous, current=current)


def verify_note(note: str, verifier_key: str) -> Checkpoint:
    """A checkpoint note checked against a verifier key; TamperDetected if it does not verify."""
    return _verified(note, verifier_key)


def _verified(note: str, verifier_key: str) -> Checkpoint:
    try:
        return verify_checkpoint(note, verifier_key)
    except CheckpointError as error:
        raise TamperDetected(
            f"the broker's audit checkpoint does not verify with the pinned key: {error}",
            hint="an impersonated broker, or a forged checkpoint: tell the escrow's auditors",
        ) from None


def _check_extends(
    client: BrokerClient,
    old_root: bytes,
    old_size: int,
    current: Checkpoint,
    directory: Path | None,
) -> None:
    where = checkpoints_path(directory)
    if current.size < old_size:
        raise TamperDetected(
            f"the broker's audit log shrank: it now has {current.size} entries, you saw "
            f"{old_size} before",
            hint=_HINT.format(path=where),
        )
    answer = client.get(
        f"/api/v1/audit/consistency?first={old_size}&second={current.size}", auth=False
    )
    proof = [base64.b64decode(h) for h in answer.get("proof", [])]
    try:
        verify_extension(old_size, current.size, old_root, current.root, proof)
    except ProofError as error:
        raise TamperDetected(
            f"the broker's audit log of size {current.size} does not extend the one of size "
            f"{old_size} you saw before ({error}): history was rewritten",
            hint=_HINT.format(path=where),
        ) from None


def pinned_verifier_key(url: str, directory: Path | None = None) -> str:
    """The checkpoint verifier key pinned for the broker at `url`."""
    name = broker_id(url)
    pinned = load_pins(directory).get(name, {}).get("checkpoint", {})
    key = pinned.get("verifier_key")
    if not key:
        raise EscrowError(
            f"no checkpoint key is pinned for {name}",
            hint="run any client command against the broker once to pin its keys",
        )
    return str(key)


def _load(directory: Path | None) -> dict[str, Any]:
    return read_json(checkpoints_path(directory), "saved checkpoints file",
                     "it forgets what you saw")


def _saved_root(saved: dict[str, Any]) -> bytes:
    return base64.b64decode(saved["root"])


def _save(name: str, checkpoint: Checkpoint, directory: Path | None) -> None:
    data = _load(directory)
    data[name] = {
        "size": checkpoint.size,
        "root": base64.b64encode(checkpoint.root).decode(),
        "note": checkpoint.text,
    }
    write_private(
        checkpoints_path(directory), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    )
