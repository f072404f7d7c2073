"""The operator's view of the broker: are the database, the object store and key custody
working, and which deposits wait for (or failed) verification."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text

from broker.adapters.db.models import AuditEvent, Deposit, Job
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain.access import authorize
from broker.domain.principals import Principal
from broker.errors import EscrowError
from broker.services import copies
from broker.services.deposits import FAILED, SEALED, VERIFYING

OPEN_JOB_STATES = ("queued", "running", "failed")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_all(escrow: Escrow, actor: Principal) -> list[Check]:
    """Probe each part; a failing part is reported, never raised (health must show them all)."""
    authorize(actor, "health.read")
    probes: tuple[tuple[str, Callable[[], str]], ...] = (
        ("database", lambda: _database(escrow)),
        ("object store", lambda: copies.check_store(escrow, escrow.store)),
        *(
            (("mirror", lambda: copies.check_store(escrow, mirror)),)
            if (mirror := escrow.mirror) is not None
            else ()
        ),
        ("key custody", escrow.custody.check),
    )
    return [_probe(name, probe) for name, probe in probes]


def _probe(name: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name, True, probe())
    except Exception as error:  # any failure is the answer, whatever its type
        detail = error.message if isinstance(error, EscrowError) else type(error).__name__
        return Check(name, False, detail)


def _database(escrow: Escrow) -> str:
    with escrow.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return f"{escrow.engine.dialect.name} answers"


def verifications(uow: UnitOfWork, actor: Principal) -> dict[str, Any]:
    """Deposits verifying or failed, and the verification jobs not done, oldest first."""
    authorize(actor, "health.read")
    deposits = uow.session.scalars(
        select(Deposit)
        .where(
            Deposit.state.in_((VERIFYING, FAILED))
            | ((Deposit.state == SEALED) & Deposit.failure.is_not(None))  # fixity failed
        )
        .order_by(Deposit.created_at, Deposit.id)
    ).all()
    jobs = uow.session.scalars(
        select(Job).where(Job.state.in_(OPEN_JOB_STATES)).order_by(Job.id)
    ).all()
    return {
        "deposits": [
            {
                "deposit_id": d.id,
                "model": d.model.full_name,
                "version": d.version,
                "state": d.state,
                "created_at": d.created_at.isoformat(),
                "failure": d.failure,
                "last_verified_at": d.last_verified_at.isoformat() if d.last_verified_at else None,
            }
            for d in deposits
        ],
        "fixity": last_fixity(uow),
        "jobs": [
            {
                "id": j.id,
                "kind": j.kind,
                "deposit_id": j.deposit_id,
                "state": j.state,
                "attempts": j.attempts,
                "locked_by": j.locked_by,
                "locked_at": j.locked_at.isoformat() if j.locked_at else None,
                "created_at": j.created_at.isoformat(),
                "error": j.error,
            }
            for j in jobs
        ],
    }


def last_fixity(uow: UnitOfWork) -> list[dict[str, Any]]:
    """The newest completed fixity run (a list of one, or empty): when, and its summary."""
    event = uow.session.scalar(
        select(AuditEvent)
        .where(AuditEvent.action == "fixity.completed")
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )
    if event is None:
        return []
    details = json.loads(event.leaf)["details"]
    return [{"seq": event.seq, "at": event.created_at.isoformat(), **details}]
