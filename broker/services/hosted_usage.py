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

The pages read the same rows: a person's hosted grants with today's use (`my_hosted_grants`,
on /me), and the lab's use per grant and day (`org_usage`, /lab/ORG/usage).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from broker.adapters.db.models import (
    Deposit,
    Grant,
    HostedUsage,
    Model,
    Organisation,
    UserProfile,
)
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.hosting import (
    DAY,
    MINUTE,
    QUERYING_KINDS,
    model_name,
    retry_after_s,
    window_end,
    window_start,
)
from broker.domain.principals import SYSTEM, Principal
from broker.errors import EscrowError
from broker.services.grants import iso, state_at
from broker.services.views_types import (
    GrantUsageView,
    HostedGrantView,
    OrgUsageView,
    UsageDay,
)

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


# --- reading (pages) ----------------------------------------------------------------------------

USAGE_DAYS = 14  # the lab's view: this many recent UTC days, today included


def my_hosted_grants(uow: UnitOfWork, actor: Principal,
                     moment: datetime | None = None) -> list[HostedGrantView]:
    """The actor's grants of hosted access (inference, internals), newest first, each with
    today's use against its quotas."""
    authorize(actor, Action.GRANT_READ_OWN)
    moment = moment or now()
    found = list(uow.session.scalars(
        select(Grant).where(Grant.user_id == int(actor.id), Grant.kind.in_(QUERYING_KINDS))
        .order_by(Grant.created_at.desc(), Grant.id)
    ))
    today = window_start(DAY, moment)
    used = _day_rows(uow, [g.id for g in found], today)
    return [{
        **_grant_terms(grant, moment),  # type: ignore[typeddict-item]
        "today": used.get((grant.id, today)) or _zero(today),
    } for grant in found]


def org_usage(uow: UnitOfWork, actor: Principal, org: str, days: int = USAGE_DAYS,
              moment: datetime | None = None) -> OrgUsageView:
    """Hosted use of an organisation's models per grant and UTC day over the last `days` days
    (reviewers and admins of the organisation, who see its grants)."""
    authorize(actor, Action.GRANT_READ_ORG, org)
    moment = moment or now()
    found = list(uow.session.scalars(
        select(Grant)
        .join(Deposit, Grant.deposit_id == Deposit.id)
        .join(Model, Deposit.model_id == Model.id)
        .join(Organisation, Model.org_id == Organisation.id)
        .where(Organisation.name == org, Grant.kind.in_(QUERYING_KINDS))
        .order_by(Grant.created_at.desc(), Grant.id)
    ))
    last = window_start(DAY, moment)
    window = [last - timedelta(days=n) for n in range(days)]  # newest first
    used = _day_rows(uow, [g.id for g in found], window[-1])
    emails = dict(uow.session.execute(
        select(UserProfile.user_id, UserProfile.email)
        .where(UserProfile.user_id.in_({g.user_id for g in found}))
    ).all())
    grants: list[GrantUsageView] = []
    for grant in found:
        per_day = [used.get((grant.id, day)) or _zero(day) for day in window]
        terms = _grant_terms(grant, moment)
        grants.append({
            "id": grant.id, "model": terms["model"], "kind": grant.kind,
            "state": terms["state"],
            "researcher": emails.get(grant.user_id) or f"user {grant.user_id}",
            "requests_per_minute": grant.requests_per_minute,
            "tokens_per_day": grant.tokens_per_day,
            "days": per_day,
            "total": {
                "day": window[-1].date().isoformat(),
                "requests": sum(d["requests"] for d in per_day),
                "input_tokens": sum(d["input_tokens"] for d in per_day),
                "output_tokens": sum(d["output_tokens"] for d in per_day),
            },
        })
    return {"org": org, "days": [day.date().isoformat() for day in window], "grants": grants}


def _grant_terms(grant: Grant, moment: datetime) -> dict[str, Any]:
    deposit = grant.deposit
    return {
        "id": grant.id,
        "model": model_name(deposit.model.organisation.name, deposit.model.name,
                            deposit.version),
        "kind": grant.kind,
        "state": str(state_at(grant, moment)),
        "not_before": iso(grant.not_before),
        "expires_at": iso(grant.expires_at),
        "revoked_at": iso(grant.revoked_at) if grant.revoked_at else None,
        "requests_per_minute": grant.requests_per_minute,
        "tokens_per_day": grant.tokens_per_day,
    }


def _day_rows(uow: UnitOfWork, grant_ids: list[str],
              since: datetime) -> dict[tuple[str, datetime], UsageDay]:
    """The day rows of these grants from `since` on, by (grant, day start)."""
    if not grant_ids:
        return {}
    rows = uow.session.scalars(select(HostedUsage).where(
        HostedUsage.grant_id.in_(grant_ids), HostedUsage.period == DAY,
        HostedUsage.starts_at >= since))
    return {(row.grant_id, row.starts_at): {
        "day": row.starts_at.date().isoformat(), "requests": row.requests,
        "input_tokens": row.input_tokens, "output_tokens": row.output_tokens,
    } for row in rows}


def _zero(day: datetime) -> UsageDay:
    return {"day": day.date().isoformat(), "requests": 0, "input_tokens": 0, "output_tokens": 0}
