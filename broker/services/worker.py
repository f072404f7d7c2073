"""The job queue in the database: claim a job (SKIP LOCKED on PostgreSQL), run it, record it."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta

from sqlalchemy import or_, select

from broker.adapters.db.models import Deposit, Job
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain.clock import now
from broker.domain.principals import SYSTEM
from broker.errors import EscrowError
from broker.services import audit, copies
from broker.services.deposits import FAILED, VERIFYING
from broker.services.fixity import FixitySchedule
from broker.services.verification import run_verification

log = logging.getLogger(__name__)
STALE_AFTER = timedelta(minutes=30)  # a claimed job older than this belonged to a dead worker
MAX_ATTEMPTS = 5


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def claim_job(escrow: Escrow, name: str) -> int | None:
    """Mark the oldest runnable job as ours and return its id, or None."""
    with escrow.uow() as uow:
        stale = now() - STALE_AFTER
        query = (
            select(Job)
            .where(
                or_(Job.state == "queued", (Job.state == "running") & (Job.locked_at < stale)),
                Job.attempts < MAX_ATTEMPTS,
            )
            .order_by(Job.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        job = uow.session.scalar(query)
        if job is None:
            return None
        job.state, job.locked_by, job.locked_at = "running", name, now()
        job.attempts += 1
        uow.commit()
        return job.id


def run_job(escrow: Escrow, job_id: int) -> None:
    with escrow.uow() as uow:
        job = uow.session.get(Job, job_id)
        assert job is not None
        deposit_id, kind = job.deposit_id, job.kind
    error = None
    try:
        if kind == "verify":
            run_verification(escrow, deposit_id, SYSTEM)
        else:
            error = f"unknown job kind {kind!r}"
    except EscrowError as failure:
        error = failure.message
        log.warning("job %s (%s of %s) failed: %s", job_id, kind, deposit_id, error)
    with escrow.uow() as uow:
        job = uow.session.get(Job, job_id)
        assert job is not None
        gave_up = bool(error) and job.attempts >= MAX_ATTEMPTS
        job.state = "failed" if gave_up else ("queued" if error else "done")
        job.error, job.locked_by = error, None
        if gave_up:
            _fail_deposit(uow, job.deposit_id, f"verification could not run: {error}")
        uow.commit()


def _fail_deposit(uow: UnitOfWork, deposit_id: str, reason: str) -> None:
    """A deposit whose verification job gave up must not stay 'verifying' forever."""
    deposit = uow.session.get(Deposit, deposit_id)
    if deposit is not None and deposit.state == VERIFYING:
        deposit.state, deposit.failure = FAILED, reason
        uow.audit(
            "deposit.verification_failed", SYSTEM, {"deposit": deposit_id}, {"reason": reason}
        )


def run_pending(escrow: Escrow, name: str | None = None) -> int:
    """Run jobs until none is left; the number run."""
    name = name or worker_name()
    count = 0
    while (job_id := claim_job(escrow, name)) is not None:
        run_job(escrow, job_id)
        count += 1
    return count


def sign_checkpoint_now(escrow: Escrow) -> int:
    """Sign the audit log's checkpoint if it grew (on a timer, not on every append)."""
    with escrow.uow() as uow:
        return audit.latest_checkpoint(escrow, uow).size


def mirror_checkpoint(escrow: Escrow, mirrored: int) -> int:
    """Sign the checkpoint and, if the log grew since `mirrored`, copy the new audit objects
    to the mirror (so that a recovery from the mirror has the log); the size now mirrored."""
    size = sign_checkpoint_now(escrow)
    if escrow.mirror is not None and size != mirrored:
        copies.sync_prefixes(escrow, ("audit/",))
    return size


def run_forever(escrow: Escrow, stop: threading.Event, poll_s: float = 1.0) -> None:
    name = worker_name()
    next_checkpoint, mirrored = 0.0, -1
    fixity = FixitySchedule(escrow, SYSTEM, sleep=stop.wait)
    while not stop.is_set():
        try:
            if time.monotonic() >= next_checkpoint:
                mirrored = mirror_checkpoint(escrow, mirrored)
                next_checkpoint = time.monotonic() + escrow.settings.checkpoint_interval_s
            busy = run_pending(escrow, name) > 0
            if not fixity.step() and not busy:
                stop.wait(poll_s)
        except Exception:  # the worker must outlive one bad job or a database blip
            log.exception("worker loop error")
            time.sleep(poll_s)
