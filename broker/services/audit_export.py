"""Auditors' filters as typed in a URL or on the command line, and the log exported in pages."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain.principals import Principal
from broker.errors import BadRequest
from broker.services import audit
from broker.services.people import get_user

EXPORT_FORMATS = {"jsonl": ("application/x-ndjson", "jsonl"), "csv": ("text/csv", "csv")}
CSV_COLUMNS = ("seq", "time", "action", "actor", "org", "model", "user", "subject", "details")


def parse_filter(uow: UnitOfWork, args: Mapping[str, str]) -> audit.EventFilter:
    """Filters from query arguments; `actor` is an email, a user id or `kind:id`."""
    actor = (args.get("actor") or "").strip()
    user_id = None
    if actor and ":" not in actor:
        user_id, actor = str(get_user(uow, actor).id), ""
    return audit.EventFilter(
        model=args.get("model") or None,
        org=args.get("org") or None,
        actor=actor or None,
        user_id=user_id,
        action=args.get("action") or None,
        since=_moment(args.get("since"), "since"),
        until=_moment(args.get("until"), "until"),
    )


def _moment(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"{name}={value!r} is not a date or time",
            hint=f"give {name} as 2026-11-01 or 2026-11-01T12:00:00Z",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def export_lines(
    escrow: Escrow, actor: Principal, filters: audit.EventFilter, kind: str
) -> Iterator[str]:
    """Every visible matching event, oldest first, a page per transaction (constant memory)."""
    if kind == "csv":
        yield _csv_row(CSV_COLUMNS)
    for leaf in _leaves(escrow, actor, filters):
        if kind == "jsonl":
            yield leaf.decode() + "\n"
        else:
            yield _csv_row(_csv_values(json.loads(leaf)))


def _leaves(escrow: Escrow, actor: Principal, filters: audit.EventFilter) -> Iterator[bytes]:
    cursor: int | None = None
    while True:
        with escrow.uow() as uow:
            rows = audit.events(uow, actor, filters, cursor, audit.PAGE_LIMIT, oldest_first=True)
            page = [bytes(r.leaf) for r in rows]
        yield from page
        if len(rows) < audit.PAGE_LIMIT:
            return
        cursor = rows[-1].seq


def _csv_values(event: dict) -> tuple[object, ...]:
    actor = event.get("actor", {})
    subject = event.get("subject", {})
    model = subject.get("model")
    return (
        event.get("seq"),
        event.get("time"),
        event.get("action"),
        f"{actor.get('kind')}:{actor.get('id')}",
        subject.get("org") or (model.split("/")[0] if model else ""),
        model or "",
        subject.get("user", ""),
        json.dumps(subject, sort_keys=True),
        json.dumps(event.get("details", {}), sort_keys=True),
    )


def _csv_row(values: tuple[object, ...]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()
