"""The operator's view of the broker: are the database, the object store and key custody
working, and which deposits wait for (or failed) verification."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from broker.adapters.db.engine import answer_within
from broker.adapters.db.models import AuditEvent, Deposit, Job, Worker
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import Principal
from broker.errors import EscrowError, Unavailable
from broker.services import copies
from broker.services.deposits import FAILED, SEALED, VERIFYING

OPEN_JOB_STATES = ("queued", "running", "failed")
PROBE_BOUND_S = 3.0  # a health answer comes within this, whatever hangs behind it


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_all(escrow: Escrow, actor: Principal) -> list[Check]:
    """Probe each part (the operator's view: `escrow admin health`, /operator)."""
    authorize(actor, Action.HEALTH_READ)
    return probe_all(escrow)


def probe_all(escrow: Escrow, bound_s: float = PROBE_BOUND_S) -> list[Check]:
    """Probe every part at once, each within `bound_s`: a failing or hanging part is reported,
    never raised and never waited for longer (health must show them all, and answer)."""
    probes: tuple[tuple[str, Callable[[], str]], ...] = (
        ("database", lambda: _database(escrow, bound_s)),
        ("object store", lambda: copies.check_store(escrow, escrow.store)),
        *(
            (("mirror", lambda: copies.check_store(escrow, mirror)),)
            if (mirror := escrow.mirror) is not None
            else ()
        ),
        ("key custody", escrow.custody.check),
    )
    running = [_Probe(name, probe) for name, probe in probes]
    deadline = time.monotonic() + bound_s
    return [probe.result(deadline, bound_s) for probe in running]


class _Probe:
    """One probe on a thread of its own, so that one that hangs cannot hold up the answer.
    A thread left behind ends when its own call times out (the database's answer bound, the
    store's read timeout)."""

    def __init__(self, name: str, probe: Callable[[], str]) -> None:
        self.name = name
        self._probe = probe
        self._check: Check | None = None
        self._thread = threading.Thread(target=self._run, name=f"health {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._check = Check(self.name, True, self._probe())
        except Exception as error:  # any failure is the answer, whatever its type
            detail = error.message if isinstance(error, EscrowError) else type(error).__name__
            self._check = Check(self.name, False, detail)

    def result(self, deadline: float, bound_s: float) -> Check:
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._check is None:
            return Check(self.name, False, f"did not answer within {bound_s:g} s")
        return self._check


def _database(escrow: Escrow, bound_s: float) -> str:
    try:
        with answer_within(bound_s), escrow.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:  # the driver's own words (no statement, no password)
        reason = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ""
        raise Unavailable(f"database: {reason or type(error.orig).__name__}") from None
    return f"{escrow.engine.dialect.name} answers"


def verifications(uow: UnitOfWork, actor: Principal, lease_s: int = 30) -> dict[str, Any]:
    """Deposits verifying or failed, the verification jobs not done, oldest first, and the
    workers heard from within two leases (`lease_s`)."""
    authorize(actor, Action.HEALTH_READ)
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
                "heartbeat_at": j.heartbeat_at.isoformat() if j.heartbeat_at else None,
                "run_after": j.run_after.isoformat() if j.run_after else None,
                "created_at": j.created_at.isoformat(),
                "error": j.error,
            }
            for j in jobs
        ],
        "workers": [
            {
                "name": w.name,
                "started_at": w.started_at.isoformat(),
                "heartbeat_at": w.heartbeat_at.isoformat(),
                "job_id": w.job_id,
            }
            for w in live_workers(uow, lease_s)
        ],
    }


def live_workers(uow: UnitOfWork, lease_s: int) -> list[Worker]:
    """Workers heard from within two leases, newest heartbeat first (a worker that died
    stops appearing once its lease is twice over)."""
    cutoff = now() - timedelta(seconds=2 * lease_s)
    return list(
        uow.session.scalars(
            select(Worker).where(Worker.heartbeat_at >= cutoff).order_by(Worker.heartbeat_at.desc())
        )
    )


def last_fixity(uow: UnitOfWork) -> list[dict[str, Any]]:
    """The newest completed fixity run (a list of one, or empty): when, and its summary."""
    event = uow.session.scalar(
        select(AuditEvent)
        .where(AuditEvent.action == AuditAction.FIXITY_COMPLETED)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )
    if event is None:
        return []
    details = json.loads(event.leaf)["details"]
    return [{"seq": event.seq, "at": event.created_at.isoformat(), **details}]
