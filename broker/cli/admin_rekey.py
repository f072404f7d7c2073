"""`escrow admin version rekey` and `escrow admin version show`: the leak response."""

from __future__ import annotations

from typing import Any

import click

from broker.cli.admin import version
from broker.cli.output import emit
from broker.cli.server import server_escrow
from broker.domain.principals import OPERATOR
from broker.services import rekey

STATES = {
    "queued": "queued: the worker re-encrypts it next; no key release meanwhile",
    "running": "running: files are being re-encrypted; no key release meanwhile",
    "switched": "switched: the new objects serve; the old ones are being removed",
    "done": "done: the version is served under the new keys",
    "failed": "failed: the old objects still serve",
}


def _lines(result: dict[str, Any]) -> list[str]:
    name = f"{result['model']}@{result['version']}"
    lines = [
        f"rekey {result['rekey_id']} of {name}: {STATES.get(result['state'], result['state'])}"
        + ("" if result["changed"] or result["state"] in ("done", "failed")
           else " (already under way: nothing new was queued)"),
        f"  reason: {result['reason']} (by {result['requested_by']}, {result['requested_at']})",
        f"  files re-encrypted: {result['files_done']} of {result['files']}; "
        f"grants revoked: {result['grants_revoked']}",
        f"  new escrow recipient: {result['recipient']}; the lab's own recipients: "
        + ("kept" if result["keep_lab_recipients"] else "dropped"),
    ]
    if result["job"]:
        lines.append(f"  {result['job']}")
    if result["state"] == "done":
        lines.append(f"  old objects deleted: {result['old_objects_deleted']}, left to their "
                     f"Object Lock date: {result['old_objects_locked']}")
    if result["error"]:
        lines.append(f"  error: {result['error']}")
    return lines


@version.command("rekey")
@click.argument("target", metavar="ORG/MODEL@VERSION")
@click.option("--reason", required=True, help="why (a leak report); on the audit log and with "
              "each grant revoked")
@click.option("--drop-lab-recipients", is_flag=True,
              help="the new headers open only with the escrow's new identity, not with the "
              "lab's own keys given at deposit (when the leak came through a lab key)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def version_rekey(target: str, reason: str, drop_lab_recipients: bool, as_json: bool) -> None:
    """Re-encrypt a version under fresh keys (a leak): every grant on it is revoked and key
    releases stop now; `escrow worker` does the work and switches the version when done."""
    model, _, number = target.partition("@")
    escrow = server_escrow()
    with escrow.uow() as uow:
        result = dict(rekey.request_rekey(escrow, uow, OPERATOR, model, number, reason,
                                          keep_lab_recipients=not drop_lab_recipients))
    emit(result, as_json, _lines(result))


@version.command("show")
@click.argument("target", metavar="ORG/MODEL@VERSION")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def version_show(target: str, as_json: bool) -> None:
    """How the version's newest rekey stands: queued, running, done or failed, and why."""
    model, _, number = target.partition("@")
    with server_escrow().uow() as uow:
        result = dict(rekey.show(uow, OPERATOR, model, number))
    emit(result, as_json, _lines(result))
