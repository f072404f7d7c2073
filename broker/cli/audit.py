"""`escrow audit …`: checkpoints, verification, filtered events, proofs and exports of the
tamper-evident audit log. Over the API as an auditor (the broker's key pinned), or — for
`verify` without --broker — the operator's self-check on this deployment's database.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click

from broker.cli.client import (
    BROKER_HELP,
    client_command,
    json_option,
    open_client,
    reporting,
    token_options,
)
from broker.cli.output import emit
from broker.client import audit as auditing
from broker.client.checkpoints import pinned_verifier_key
from broker.client.http import BrokerClient

FILTER_NAMES = ("model", "org", "actor", "action", "since", "until")


def filter_options(command: Any) -> Any:
    for name, text in reversed(
        (
            ("model", "ORG/MODEL"),
            ("org", "an organisation"),
            ("actor", "an email, a user id or KIND:ID (e.g. token:abc)"),
            ("action", "e.g. key.released"),
            ("since", "a date or time (UTC unless it says otherwise)"),
            ("until", "a date or time, exclusive"),
        )
    ):
        command = click.option(f"--{name}", help=f"only events of {text}")(command)
    return command


def _query(options: dict[str, Any], **extra: Any) -> str:
    pairs = {k: v for k, v in {**options, **extra}.items() if v not in (None, "")}
    return urlencode(pairs)


@click.group()
def audit() -> None:
    """Check and read the tamper-evident audit log."""


@audit.command("checkpoint")
@click.option("--size", type=click.IntRange(0), help="the checkpoint signed at this size")
@client_command
def checkpoint(size: int | None, client: BrokerClient, as_json: bool) -> None:
    """Print the broker's newest signed checkpoint (checked against the pinned key); save it to
    check later that the log still extends it: `escrow audit verify --since FILE`."""
    found = auditing.newest_checkpoint(client, size)
    if as_json:
        emit({"size": found.size, "root": found.root.hex(), "note": found.text}, True, [])
    else:
        click.echo(found.text, nl=False)


@audit.command("verify")
@click.option(
    "--broker",
    "broker_url",
    default=None,
    help="check this broker over the API as an auditor; without it, check this deployment's "
    "own database (operator)",
)
@click.option(
    "--since",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a checkpoint saved before: prove today's log extends it",
)
@token_options
@json_option
@reporting
def verify(
    broker_url: str | None,
    since: Path | None,
    token: str | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    """Recompute the log's root from every entry and check the signed checkpoints."""
    saved = since.read_text(encoding="utf-8") if since else None
    if broker_url:
        result = _verify_remote(open_client(broker_url, token, token_file), saved)
    else:
        result = _verify_local(saved)
    lines = [
        f"audit log OK: {result['size']} entries, root {result['root']}",
        f"checkpoint signed by {result['verifier_key']}",
    ]
    if saved is not None:
        lines.append(f"it extends the checkpoint of size {result['since']} in {since}")
    emit({"ok": True, **result}, as_json, lines)


def _verify_remote(client: Any, saved: str | None) -> dict[str, Any]:
    verified = auditing.verify_log(client, saved)
    return {
        "size": verified.checkpoint.size,
        "root": verified.checkpoint.root.hex(),
        "since": verified.since.size if verified.since else None,
        "verifier_key": pinned_verifier_key(client.base_url),
    }


def _verify_local(saved: str | None) -> dict[str, Any]:
    from broker.cli.server import server_escrow
    from broker.services.audit import verify_deployment

    return verify_deployment(server_escrow(), saved)


@audit.command("show")
@filter_options
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="show at most this many events, newest first")
@client_command
def show(limit: int, client: BrokerClient, as_json: bool, **filters: Any) -> None:
    """The events you may see, newest first."""
    answer = client.get(f"/api/v1/audit/events?{_query(filters, limit=limit)}")
    lines = [_event_line(e) for e in answer["events"]] or ["no events match"]
    emit(answer, as_json, lines)


def _event_line(event: dict[str, Any]) -> str:
    actor = event.get("actor", {})
    subject = {k: v for k, v in event.get("subject", {}).items() if k != "user_commitment"}
    about = " ".join(f"{k}={v}" for k, v in sorted(subject.items()))
    return f"{event['seq']:>6} {event['time']} {event['action']:<28} {actor.get('kind')}:" \
        f"{actor.get('id')} {about}"


@audit.command("prove")
@click.argument("seq", type=click.IntRange(0))
@client_command
def prove(seq: int, client: BrokerClient, as_json: bool) -> None:
    """An inclusion proof of event SEQ in the signed log, checked here; save it and anyone can
    check it offline with `escrow audit check-proof FILE`."""
    bundle = auditing.prove(client, seq)
    click.echo(json.dumps(bundle, sort_keys=True) if as_json else auditing.dumps(bundle))


@audit.command("check-proof")
@click.argument("bundle_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--verifier-key", help="the broker's checkpoint verifier key, from its README "
              "or /api/v1/keys (default: the one in the bundle)")
@json_option
@reporting
def check_proof(bundle_file: Path, verifier_key: str | None, as_json: bool) -> None:
    """Check a proof saved by `escrow audit prove`, without any broker."""
    bundle = json.loads(bundle_file.read_text(encoding="utf-8"))
    checkpoint = auditing.check_bundle(bundle, verifier_key)
    emit(
        {"ok": True, "seq": bundle["seq"], "size": checkpoint.size},
        as_json,
        [f"event {bundle['seq']} is in the signed log of size {checkpoint.size}"],
    )


@audit.command("export")
@click.option("--format", "kind", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True, help="JSON lines (the exact leaves) or CSV")
@filter_options
@click.option("--broker", "broker_url", default=None, envvar="ESCROW_BROKER", help=BROKER_HELP)
@token_options
@reporting
def export(
    kind: str, broker_url: str | None, token: str | None, token_file: Path | None, **filters: Any
) -> None:
    """Every event you may see, oldest first, as JSON lines (the exact leaves) or CSV."""
    client = open_client(broker_url, token, token_file)
    out = sys.stdout.buffer
    for chunk in client.stream(f"/api/v1/audit/export?{_query(filters, format=kind)}"):
        out.write(chunk)
    out.flush()
