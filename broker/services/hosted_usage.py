"""Quotas and usage of hosted access, counted in the database so every broker process shares them.

`hosted_usage` holds, per grant, a row per minute (requests, against `requests_per_minute`) and
per UTC day (requests, input and output tokens: the day's usage, and the count against
`tokens_per_day`). Both are incremented with one INSERT … ON CONFLICT DO UPDATE: on PostgreSQL
concurrent increments of a row queue on its lock and each adds to the newest value, so brokers
neither lose counts nor let two requests through where one fits (the minute's increment is
conditional: `requests < limit`, evaluated on the locked row).

A request is admitted (`admit`) before it is forwarded; its tokens are counted after the worker
answered (`record`, from the answer's `usage`), so the token quota refuses the requests that
come once the day's count reached the limit. The worker reports each ended day once
(`report_due`): one `hosted.usage` event per grant and day, numbers only, never text.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from broker.adapters.db.models import Grant, HostedUsage
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.hosting import DAY, MINUTE, retry_after_s, window_end, window_start
from broker.domain.principals import SYSTEM
from broker.errors import EscrowError
from broker.services.grants import iso

REPORT_GRACE = timedelta(minutes=10)  # a day is reported this long after it ends (late answers)
KEEP_MINUTES = timedelta(hours=1)  # minute rows older than this are deleted when reporting


class QuotaExceeded(EscrowError):
    """Over a grant's quota: 429, with the seconds until the window resets (Retry-After)."""

    status = 429
    title = "quota exceeded"

    def __init__(self, message: str, *, hint: str, retry_after: int) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


def admit(uow: UnitOfWork, grant_id: str, per_minute: int | None, per_day: int | None,
          moment: datetime | None = None) -> None:
    """Count one request against the grant's quotas, or refuse it (nothing counted)."""
    moment = moment or now()
    if per_day is not None:
        used = uow.session.execute(
            select(HostedUsage.input_tokens + HostedUsage.output_tokens).where(
                HostedUsage.grant_id == grant_id, HostedUsage.period == DAY,
                HostedUsage.starts_at == window_start(DAY, moment))
        ).scalar()
        if used is not None and used >= per_day:
            raise _refusal(grant_id, f"{per_day} tokens per day", DAY, moment)
    if per_minute is not None:
        counted = uow.session.execute(
            _increment(uow, grant_id, MINUTE, moment, requests=1,
                       where=HostedUsage.requests < per_minute)
            .returning(HostedUsage.requests)
        ).first()
        if counted is None:  # the row is at the limit: not incremented
            raise _refusal(grant_id, f"{per_minute} requests per minute", MINUTE, moment)
        uow.commit()


def record(uow: UnitOfWork, grant_id: str, usage: dict[str, Any] | None,
           moment: datetime | None = None) -> None:
    """Add one answered request and its tokens (the worker's `usage`) to the grant's day."""
    usage = usage if isinstance(usage, dict) else {}
    uow.session.execute(_increment(
        uow, grant_id, DAY, moment or now(), requests=1,
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
    ))
    uow.commit()


def day_usage(uow: UnitOfWork, grant_id: str, moment: datetime | None = None) -> dict[str, int]:
    """The grant's use so far in the UTC day of `moment` (what its `hosted.usage` event will
    say once the day ends): requests, input and output tokens."""
    row = uow.session.execute(
        select(HostedUsage.requests, HostedUsage.input_tokens, HostedUsage.output_tokens).where(
            HostedUsage.grant_id == grant_id, HostedUsage.period == DAY,
            HostedUsage.starts_at == window_start(DAY, moment or now()))
    ).first()
    found = tuple(row) if row is not None else (0, 0, 0)
    return dict(zip(("requests", "input_tokens", "output_tokens"), map(int, found),
                    strict=True))


def report_due(escrow: Escrow, at: datetime | None = None) -> int:
    """One `hosted.usage` event per grant and ended day not reported yet: the number written.
    Each day row is claimed by a conditional UPDATE, so two workers never report it twice."""
    moment = at or now()
    last_start = window_start(DAY, moment - REPORT_GRACE) - timedelta(days=1)
    written = 0
    with escrow.uow() as uow:
        due = uow.session.execute(
            select(HostedUsage.grant_id, HostedUsage.starts_at).where(
                HostedUsage.period == DAY, HostedUsage.reported_at.is_(None),
                HostedUsage.starts_at <= last_start)
            .order_by(HostedUsage.starts_at, HostedUsage.grant_id)
        ).all()
        for grant_id, starts_at in due:
            claimed = uow.session.execute(
                update(HostedUsage).where(
                    HostedUsage.grant_id == grant_id, HostedUsage.period == DAY,
                    HostedUsage.starts_at == starts_at, HostedUsage.reported_at.is_(None))
                .values(reported_at=moment)
                .returning(HostedUsage.requests, HostedUsage.input_tokens,
                           HostedUsage.output_tokens)
            ).first()
            if claimed is None:
                continue  # another worker reported it
            grant = uow.session.get(Grant, grant_id)
            assert grant is not None  # a foreign key
            uow.audit(
                AuditAction.HOSTED_USAGE, SYSTEM,
                {"grant": grant_id, "deposit": grant.deposit_id},
                {"day": starts_at.date().isoformat(), "requests": claimed.requests,
                 "input_tokens": claimed.input_tokens, "output_tokens": claimed.output_tokens},
            )
            uow.commit()
            written += 1
        uow.session.execute(delete(HostedUsage).where(
            HostedUsage.period == MINUTE, HostedUsage.starts_at < moment - KEEP_MINUTES))
        uow.commit()
    return written


def _increment(uow: UnitOfWork, grant_id: str, period: str, moment: datetime,
               where: Any = None, **counts: int) -> Any:
    """INSERT the window's row with `counts`, or add them to the row there (if `where`)."""
    dialect = postgresql if uow.session.get_bind().dialect.name == "postgresql" else sqlite
    values = {"requests": 0, "input_tokens": 0, "output_tokens": 0, **counts}
    statement = dialect.insert(HostedUsage).values(
        grant_id=grant_id, period=period, starts_at=window_start(period, moment), **values)
    return statement.on_conflict_do_update(
        index_elements=["grant_id", "period", "starts_at"],
        set_={name: getattr(HostedUsage, name) + n for name, n in counts.items()},
        where=where,
    )


def _refusal(grant_id: str, limit: str, period: str, moment: datetime) -> QuotaExceeded:
    wait = retry_after_s(period, moment)
    return QuotaExceeded(
        f"grant {grant_id} is over its quota of {limit}; it resets at "
        f"{iso(window_end(period, moment))} (in {wait} s)",
        hint=f"retry after {wait} seconds (Retry-After); the lab's policy sets the quota",
        retry_after=wait,
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
