"""`escrow hosted …` (operator, at the server console) and `escrow model-worker` (the worker).

    escrow hosted worker create NAME --recipient age1… [--config-dir DIR]
        the worker's account and key; its login is stored in DIR (the worker's own config dir)
    escrow hosted worker identity --out FILE [--x25519]
        on the worker host: its age identity, wrapped by the host's key custody (no plaintext
        on disk); prints the recipient for `worker create`
    escrow hosted allow ORG/MODEL@VERSION --worker NAME [--days N]
        a hosting grant: the worker may obtain the version's file keys (each on the audit log)
    escrow model-worker ORG/MODEL@VERSION --identity FILE [--broker URL] [--port N]
        load the version into memory and serve it to the broker
    escrow hosted key create GRANT | list | revoke KEY      (a person, through the API)
        API keys of one's own inference grant: the /v1 API's bearer for that version only
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from broker.cli.client import client_options, open_client, reporting
from broker.cli.output import emit
from broker.cli.server import server_escrow
from broker.domain.principals import OPERATOR


@click.group()
def hosted() -> None:
    """Hosted access: model workers and what they may host (operator), API keys (a person)."""


@hosted.group()
def worker() -> None:
    """Model workers' accounts."""


@worker.command("create")
@click.argument("name")
@click.option("--recipient", required=True,
              help="the worker's public key (age1… or age1pq1…): its identity file stays its own")
@click.option("--config-dir", type=click.Path(path_type=Path), required=True,
              help="the worker's config dir (its ESCROW_CONFIG_DIR): its login is stored there")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def worker_create(name: str, recipient: str, config_dir: Path, as_json: bool) -> None:
    """Make model worker NAME's account and key, and store its login for the worker."""
    from broker.client import credentials
    from broker.services import hosting

    escrow = server_escrow()
    with escrow.uow() as uow:
        user, key, pair = hosting.create_worker_login(uow, OPERATOR, name, recipient)
        user_id, key_id = user.id, key.id
    url = escrow.settings.public_url
    credentials.store(
        url,
        {"access_token": pair.access_token, "refresh_token": pair.refresh_token,
         "expires_in": pair.expires_in},
        f"model worker {name}",
        config_dir,
    )
    emit(
        {"worker": name, "user": str(user_id), "key_id": key_id, "broker": url,
         "config_dir": str(config_dir)},
        as_json,
        [f"model worker {name}: account {user_id}, key {key_id}; its login at {url} is stored "
         f"in {config_dir} (run the worker with ESCROW_CONFIG_DIR={config_dir})"],
    )


@worker.command("identity")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="where to write the wrapped identity (0600; never replaced)")
@click.option("--post-quantum", "kind", flag_value="post-quantum", default=True,
              help="a post-quantum hybrid key, mlkem768x25519 (age1pq1…); the default")
@click.option("--x25519", "kind", flag_value="x25519",
              help="a classical X25519 age key (age1…)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
@reporting
def worker_identity(out: Path, kind: str, as_json: bool) -> None:
    """On the worker host: make the worker's age identity, held by this host's key custody.

    The identity is wrapped with the custody this host's ESCROW_* settings name (a local master
    key file by default, made here if missing) and only the wrapped blob is written: the
    plaintext never touches disk. Prints the recipient for `escrow hosted worker create`."""
    from broker.adapters.custody.local import LocalCustody
    from broker.client.local import write_private
    from broker.config import load_settings
    from broker.container import build_custody
    from broker.errors import Conflict
    from broker.hosting.identity import wrap_new_identity

    if out.exists() or out.is_symlink():
        raise Conflict(f"{out} exists already; it is not replaced (the worker's grants are "
                       "issued to the identity in it)",
                       hint="give another file with --out FILE, or move the old one away first")
    settings = load_settings()
    lines: list[str] = []
    if settings.key_custody == "local" and not settings.key_file.exists():
        LocalCustody.create_key_file(settings.key_file)
        lines.append(f"made local master key file {settings.key_file} (mode 0600): without it "
                     "the identity cannot be unwrapped; keep a backup")
    wrapped = wrap_new_identity(build_custody(settings), kind)
    write_private(out, wrapped.blob)
    custody = f"{settings.key_custody} custody"
    lines = [wrapped.recipient, *lines,
             f"wrote the worker's {kind} identity, wrapped by {custody}, to {out} (mode 0600)",
             f"next, at the server console: escrow hosted worker create NAME --recipient "
             f"{wrapped.recipient} --config-dir DIR; then: escrow model-worker ORG/MODEL@VERSION "
             f"--identity {out}"]
    emit({"recipient": wrapped.recipient, "type": kind, "path": str(out),
          "key_custody": settings.key_custody}, as_json, lines)


@hosted.command("allow")
@click.argument("target", metavar="ORG/MODEL@VERSION")
@click.option("--worker", "worker_name", required=True, help="the model worker's name")
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help="how long; revoke the grant to stop hosting sooner")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def allow(target: str, worker_name: str, days: int, as_json: bool) -> None:
    """A hosting grant: WORKER may load TARGET (its key releases are on the audit log)."""
    from broker.services import hosting

    model, _, version = target.partition("@")
    escrow = server_escrow()
    with escrow.uow() as uow:
        grant = hosting.allow_hosting(uow, OPERATOR, escrow.settings.policy_dir, model, version,
                                      worker_name, days)
        result = {"grant_id": grant.id, "worker": worker_name, "model": model,
                  "version": version, "kind": grant.kind,
                  "expires_at": grant.expires_at.isoformat()}
    emit(result, as_json, [f"hosting grant {grant.id}: {worker_name} may host {target} until "
                           f"{result['expires_at']}"])


@hosted.group()
def key() -> None:
    """Your API keys for the hosted /v1 API, each bound to one of your inference grants."""


@key.command("create")
@click.argument("grant_id", metavar="GRANT")
@client_options
@reporting
def key_create(grant_id: str, broker_url: str | None, token: str | None,
               token_file: Path | None, as_json: bool) -> None:
    """A new API key of your inference grant GRANT, printed once (the broker keeps its hash)."""
    made = open_client(broker_url, token, token_file).post("/api/v1/hosted/keys",
                                                           {"grant_id": grant_id})
    emit(made, as_json, [
        f"API key {made['id']} of grant {made['grant_id']}, for {made['model']} only:",
        made["key"],
        "shown this once: store it now (the openai client's api_key; revoke it with "
        f"escrow hosted key revoke {made['id']})",
    ])


@key.command("list")
@client_options
@reporting
def key_list(broker_url: str | None, token: str | None, token_file: Path | None,
             as_json: bool) -> None:
    """Your API keys (never their secrets)."""
    found = open_client(broker_url, token, token_file).get("/api/v1/hosted/keys")
    lines = [f"{k['id']}  grant {k['grant_id']}  {k['model']}  created {k['created_at']}"
             + f"  last used {k.get('last_used_at') or 'never'}"
             + (f"  revoked {k['revoked_at']}" if k["revoked_at"] else "")
             for k in found["keys"]] or ["no API keys"]
    emit(found, as_json, lines)


@key.command("revoke")
@click.argument("key_id", metavar="KEY")
@client_options
@reporting
def key_revoke(key_id: str, broker_url: str | None, token: str | None,
               token_file: Path | None, as_json: bool) -> None:
    """Revoke your API key KEY (its id, or the key itself): its next request is refused."""
    from broker.domain.secrets import split_secret

    whole = split_secret(key_id, "ehk")  # the key itself: only its id is sent
    key_id = whole[0] if whole else key_id
    done = open_client(broker_url, token, token_file).delete(f"/api/v1/hosted/keys/{key_id}")
    emit(done, as_json, [f"API key {done['id']} revoked at {done['revoked_at']}"])


@click.command("model-worker")
@click.argument("target", metavar="ORG/MODEL@VERSION")
@click.option("--identity", "identity_file", type=click.Path(path_type=Path, exists=True),
              required=True, help="the worker's own age identity file, or the identity "
              "`escrow hosted worker identity` wrapped with this host's key custody")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="the address the worker serves on (the broker must reach it)")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="the port (default: any free one)")
@client_options
@reporting
def model_worker(
    target: str,
    identity_file: Path,
    host: str,
    port: int,
    broker_url: str | None,
    token: str | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    """Load a version into memory (no plaintext on disk) and serve it to the broker."""
    from broker.client.local import config_dir
    from broker.config import load_settings
    from broker.container import build_custody
    from broker.hosting.identity import load_worker_identities
    from broker.hosting.worker import ModelWorker, WorkerOptions

    identities = load_worker_identities(identity_file, lambda: build_custody(load_settings()))
    client = open_client(broker_url, token, token_file)
    options = WorkerOptions(target, identities, host, port, config_dir())

    def say(line: str) -> None:
        click.echo(line, err=True)

    sys.exit(ModelWorker(client, options, say).run())
