"""`escrow admin notifications`: the outbox of email notifications, as the operator sees it."""

from __future__ import annotations

import click

from broker.cli.output import emit
from broker.cli.server import server_escrow
from broker.domain.principals import OPERATOR
from broker.services import notifications as service


@click.command("notifications")
@click.option("--state", type=click.Choice(service.STATES), default=None,
              help="only messages in this state (failed: given up, with the reason)")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True,
              help="at most this many, newest first")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def notifications(state: str | None, limit: int, as_json: bool) -> None:
    """List the email notifications queued, sent and failed, newest first.

    \b
    The worker sends them (ESCROW_SMTP_URL); one the mail server cannot take now is retried
    with a growing wait, and ends `failed` after ESCROW_NOTIFY_MAX_ATTEMPTS attempts or when
    the server refuses it for good.
    """
    escrow = server_escrow()
    if escrow.settings.smtp is None and not as_json:
        click.echo("# notifications are off (ESCROW_SMTP_URL is not set): nothing is queued")
    with escrow.uow() as uow:
        rows = [
            {
                "id": m.id, "kind": m.kind, "recipient": m.recipient, "subject": m.subject,
                "state": m.state, "attempts": m.attempts, "run_after": m.run_after.isoformat(),
                "created_at": m.created_at.isoformat(),
                "sent_at": m.sent_at.isoformat() if m.sent_at else None,
                "last_error": m.last_error,
            }
            for m in service.outbox(uow, OPERATOR, state, limit)
        ]
    lines = [
        f"{r['id']:>6}  {r['state']:<6}  {r['attempts']} attempt(s)  {r['kind']:<19}  "
        f"{r['recipient']}  {r['subject']}"
        + (f"\n        next try {r['run_after']}" if r["state"] == "queued" else "")
        + (f"\n        last error: {r['last_error']}" if r["last_error"] else "")
        for r in rows
    ]
    lines.append(f"{len(rows)} message(s)" + (f" {state}" if state else ""))
    emit({"messages": rows}, as_json, lines)
