"""The job queue in the database: claim a job under a lease, keep the lease alive while it runs,
record its end in the same transaction as its result.

A claimed job holds a lease (`ESCROW_JOB_LEASE_S`) that the working process renews from a
heartbeat thread. A worker that dies stops renewing; once the lease lapses, the next worker takes
the job over. Attempts back off exponentially; a job that keeps failing (or whose workers keep
dying) ends `failed` with its last error, and so does its deposit, with what to do next.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Update, delete, or_, select, update

from broker.adapters.db.models import Deposit, Job, Worker
from broker.adapters.db.uow import UnitOfWork, rowcount
from broker.container import Escrow
from broker.domain.clock import now
from broker.domain.principals import SYSTEM
from broker.errors import EscrowError
from broker.services import (
    agreements,
    copies,
    hosted_usage,
    idempotency,
    notifications,
    rekey,
    rekey_run,
    study_captures,
    uploads,
)
from broker.services.fixity import FixitySchedule
from broker.services.verification import (
    Cancelled,
    fail_deposit,
    run_verification,
    verify_file,
)

log = logging.getLogger(__name__)
MAX_BACKOFF = timedelta(hours=1)
HOUSEKEEPING_INTERVAL_S = 600.0
AGREEMENTS_INTERVAL_S = 60.0  # release agreements: a date or a silence fires within a minute
MAIL_INTERVAL_S = 5.0  # notifications: sent within seconds of their transaction
GRANT_NOTICES_INTERVAL_S = 300.0  # grants expiring or expired: found within five minutes
HOSTED_USAGE_INTERVAL_S = 300.0  # hosted access: each ended day's usage on the log (once)
UPLOADS_IDLE_FOR = timedelta(days=7)


def worker_name() -> str:
    """host:pid:thread, within the 64 characters a job's `locked_by` holds."""
    return f"{socket.gethostname()[:36]}:{os.getpid()}:{threading.get_ident()}"[:64]


@dataclass
class Lease:
    """A job claimed by this worker: `lost` is set when the lease can no longer be proven ours
    (another worker may have taken the job), and the work stops."""

    job_id: int
    worker: str
    lost: threading.Event = field(default_factory=threading.Event)

    def update_if_ours(self) -> Update:
        """An UPDATE of the job that changes it only while this lease still holds it."""
        return (
            update(Job)
            .where(Job.id == self.job_id, Job.locked_by == self.worker, Job.state == "running")
            .execution_options(synchronize_session=False)
        )

    def settle(self, uow: UnitOfWork, error: str | None, attempts_left: bool) -> bool:
        """End the job in `uow` (the transaction of its result), only if it is still ours."""
        retry = bool(error) and attempts_left
        values: dict[str, object] = {
            "state": "queued" if retry else ("failed" if error else "done"),
            "error": error,
            "locked_by": None,
            "lease_until": None,
            "finished_at": None if retry else now(),
        }
        return rowcount(uow.session.execute(self.update_if_ours().values(**values))) == 1


def claim_job(escrow: Escrow, name: str) -> Lease | None:
    """Take the oldest runnable job under a fresh lease, or None. A job whose lease lapsed
    after its last allowed attempt ends here, failed."""
    while True:
        with escrow.uow() as uow:
            moment = now()
            job = uow.session.scalar(
                select(Job)
                .where(_runnable(moment))
                .order_by(Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if job is None:
                return None
            if job.state == "running" and job.attempts >= escrow.settings.job_max_attempts:
                given_up = (job.id, job.deposit_id, job.kind)
            else:
                job.state, job.locked_by, job.locked_at = "running", name, moment
                job.lease_until = moment + timedelta(seconds=escrow.settings.job_lease_s)
                job.heartbeat_at = moment
                job.attempts += 1
                uow.commit()
                return Lease(job.id, name)
        _give_up(escrow, *given_up)


def _runnable(moment: datetime) -> ColumnElement[bool]:
    return or_(
        (Job.state == "queued") & (Job.run_after.is_(None) | (Job.run_after <= moment)),
        (Job.state == "running") & (Job.lease_until < moment),
    )


def _give_up(escrow: Escrow, job_id: int, deposit_id: str, kind: str) -> None:
    """End a job whose workers kept dying, and its deposit, in a transaction that locks the
    deposit before the job (the order every writer of a deposit's result takes)."""
    with escrow.uow() as uow:
        uow.session.get(Deposit, deposit_id, with_for_update=True)
        job = uow.session.scalar(
            select(Job).where(Job.id == job_id, _runnable(now())).with_for_update()
        )
        if job is None or job.state != "running":
            return  # another worker took it or ended it in the meantime
        error = (
            f"the worker running it ({job.locked_by}) stopped without finishing, "
            f"{job.attempts} time(s)"
        )
        job.state, job.error, job.locked_by = "failed", error, None
        job.lease_until, job.finished_at = None, now()
        _fail(escrow, uow, kind, deposit_id, error, "", job_id)
        uow.commit()


def _fail(
    escrow: Escrow, uow: UnitOfWork, kind: str, deposit_id: str, error: str, hint: str,
    job_id: int,
) -> None:
    """What a job that gave up leaves: a failed verification fails its deposit; a failed
    rekey ends, the old objects still serving."""
    if kind == "rekey":
        rekey.fail_rekey(escrow, uow, deposit_id, f"the rekey could not run: {error}", job_id)
    else:
        fail_deposit(uow, deposit_id, f"verification could not run: {error}", hint, job_id)


def backoff(escrow: Escrow, attempts: int) -> timedelta:
    """The wait before attempt `attempts + 1`: doubling from ESCROW_JOB_BACKOFF_S, capped."""
    base = timedelta(seconds=escrow.settings.job_backoff_s)
    return min(base * (2 ** max(attempts - 1, 0)), MAX_BACKOFF)


class Heartbeat:
    """Renews a lease (and the worker's row) every third of the lease, on its own thread and
    its own short transactions; marks the lease lost when it cannot be renewed in time."""

    def __init__(self, escrow: Escrow, lease: Lease) -> None:
        self.escrow, self.lease = escrow, lease
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="job-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def _run(self) -> None:
        lease_s = self.escrow.settings.job_lease_s
        valid_until = time.monotonic() + lease_s
        while not self.done.wait(lease_s / 3):
            try:
                if not renew(self.escrow, self.lease):
                    self.lease.lost.set()
                    return
                valid_until = time.monotonic() + lease_s
            except Exception as error:  # a database blip: try again until the lease runs out
                log.warning("job %s: heartbeat failed: %s", self.lease.job_id, error)
            if time.monotonic() >= valid_until:
                self.lease.lost.set()
                return


def renew(escrow: Escrow, lease: Lease) -> bool:
    """Extend the lease if the job is still ours; False if it is not."""
    with escrow.uow() as uow:
        moment = now()
        renewed = uow.session.execute(
            lease.update_if_ours().values(
                lease_until=moment + timedelta(seconds=escrow.settings.job_lease_s),
                heartbeat_at=moment,
            )
        )
        record_worker(uow, lease.worker, lease.job_id, moment)
        uow.commit()
        return rowcount(renewed) == 1


def record_worker(uow: UnitOfWork, name: str, job_id: int | None, moment: datetime) -> None:
    worker = uow.session.get(Worker, name)
    if worker is None:
        uow.session.add(Worker(name=name, started_at=moment, heartbeat_at=moment, job_id=job_id))
    else:
        worker.heartbeat_at, worker.job_id = moment, job_id


def run_job(escrow: Escrow, lease: Lease, stop: threading.Event | None = None) -> None:
    """Run a claimed job to its end; `stop` (a shutdown) hands the job back unfinished."""
    with escrow.uow() as uow:
        job = uow.session.get(Job, lease.job_id)
        assert job is not None
        deposit_id, kind, attempts = job.deposit_id, job.kind, job.attempts
        file_idx = job.file_idx
    attempts_left = attempts < escrow.settings.job_max_attempts
    error, hint = "", ""
    with Heartbeat(escrow, lease):
        try:
            if kind == "rekey":  # one job per deposit: rekey_run says why
                rekey_run.run_rekey(
                    escrow,
                    deposit_id,
                    cancelled=lambda: lease.lost.is_set() or bool(stop and stop.is_set()),
                    settle=lambda uow: _settled(lease.settle(uow, None, attempts_left)),
                )
                return
            if kind != "verify":
                error = f"unknown job kind {kind!r}"
            elif file_idx is not None:
                verify_file(
                    escrow,
                    deposit_id,
                    file_idx,
                    SYSTEM,
                    cancelled=lambda: lease.lost.is_set() or bool(stop and stop.is_set()),
                    settle=lambda uow: _settled(lease.settle(uow, None, attempts_left)),
                )
                return
            else:  # a job queued before per-file jobs: the whole deposit
                run_verification(
                    escrow,
                    deposit_id,
                    SYSTEM,
                    cancelled=lambda: lease.lost.is_set() or bool(stop and stop.is_set()),
                    settle=lambda uow: _settled(lease.settle(uow, None, attempts_left)),
                )
                return
        except Cancelled:
            if stop is not None and stop.is_set() and not lease.lost.is_set():
                release(escrow, lease)
            return  # a lost lease: the job is someone else's now
        except EscrowError as failure:
            error, hint = failure.message, failure.hint
            log.warning("job %s (%s of %s) failed: %s", lease.job_id, kind, deposit_id, error)
    _record_failure(escrow, lease, (kind, error, hint), attempts, attempts_left)


def _settled(ours: bool) -> None:
    if not ours:
        raise Cancelled("the job's lease passed to another worker before its result was written")


def _record_failure(
    escrow: Escrow, lease: Lease, failure: tuple[str, str, str], attempts: int,
    attempts_left: bool,
) -> None:
    kind, error, hint = failure
    with escrow.uow() as uow:
        deposit_id = uow.session.scalar(select(Job.deposit_id).where(Job.id == lease.job_id))
        uow.session.get(Deposit, deposit_id, with_for_update=True)  # before the job: _give_up
        if not lease.settle(uow, error, attempts_left):
            return
        job = uow.session.get(Job, lease.job_id)
        assert job is not None
        if attempts_left:
            job.run_after = now() + backoff(escrow, attempts)
        else:
            _fail(escrow, uow, kind, job.deposit_id, error, hint, job.id)
        uow.commit()


def release(escrow: Escrow, lease: Lease) -> None:
    """Hand a job back at shutdown: queued again at once, this attempt not counted."""
    with escrow.uow() as uow:
        uow.session.execute(
            lease.update_if_ours().values(
                state="queued",
                locked_by=None,
                lease_until=None,
                run_after=None,
                attempts=Job.attempts - 1,
            )
        )
        uow.commit()


def run_pending(
    escrow: Escrow, name: str | None = None, stop: threading.Event | None = None
) -> int:
    """Run jobs until none is runnable (or `stop` is set); the number run."""
    name = name or worker_name()
    count = 0
    while not (stop is not None and stop.is_set()) and (lease := claim_job(escrow, name)):
        run_job(escrow, lease, stop)
        count += 1
    return count


def housekeeping(escrow: Escrow) -> None:
    """What the worker clears on its schedule: multipart uploads idle for a week (their staged
    parts freed), idempotency records past their keeping time, notifications sent long ago."""
    aborted = uploads.gc_uploads(escrow, UPLOADS_IDLE_FOR)
    with escrow.uow() as uow:
        dropped = idempotency.forget_old(uow)
        notifications.forget_sent(uow)
        uow.commit()
    if aborted or dropped:
        log.info("aborted %d idle upload(s), dropped %d idempotency record(s)",
                 len(aborted), dropped)


def _say_alive(escrow: Escrow, name: str) -> None:
    with escrow.uow() as uow:
        record_worker(uow, name, None, now())
        uow.commit()


def _say_gone(escrow: Escrow, name: str) -> None:
    """Remove this worker's row, and any not heard from for a day."""
    with escrow.uow() as uow:
        uow.session.execute(
            delete(Worker).where(
                (Worker.name == name) | (Worker.heartbeat_at < now() - timedelta(days=1))
            )
        )
        uow.commit()


def run_forever(escrow: Escrow, stop: threading.Event, poll_s: float = 1.0) -> None:
    """The worker loop until `stop`: jobs first, then the checkpoint (signed and mirrored on a
    timer), housekeeping and one step of fixity, each on its own: a store or database that
    fails one of them holds up none of the others. The checkpoint once more on the way out."""
    name = worker_name()
    # Housekeeping waits one interval: a worker that restarts must not sweep the store each time.
    timers = {
        "alive": 0.0,
        "checkpoint": 0.0,
        "housekeeping": time.monotonic() + HOUSEKEEPING_INTERVAL_S,
        "agreements": 0.0,
        "mail": 0.0,
        "grant notices": 0.0,
        "hosted usage": 0.0,
    }
    mirrored = -1
    fixity = FixitySchedule(escrow, SYSTEM, sleep=stop.wait)

    def checkpoint() -> None:
        nonlocal mirrored
        mirrored = copies.mirror_checkpoint(escrow, mirrored)

    while not stop.is_set():
        if _due(timers, "alive", escrow.settings.job_lease_s / 3):  # as often as a heartbeat
            _guarded("heartbeat", lambda: _say_alive(escrow, name))
        busy = _guarded("jobs", lambda: run_pending(escrow, name, stop) > 0)
        if _due(timers, "checkpoint", escrow.settings.checkpoint_interval_s):
            _guarded("checkpoint", checkpoint)
        if _due(timers, "housekeeping", HOUSEKEEPING_INTERVAL_S):
            _guarded("housekeeping", lambda: housekeeping(escrow))
        if _due(timers, "agreements", AGREEMENTS_INTERVAL_S):  # dates and lab silences
            _guarded("agreements", lambda: agreements.fire_due(escrow))
        if escrow.settings.smtp and _due(timers, "grant notices", GRANT_NOTICES_INTERVAL_S):
            _guarded("grant notices", lambda: notifications.queue_grant_notices(escrow))
        if escrow.settings.smtp and _due(timers, "mail", MAIL_INTERVAL_S):  # never in a request
            _guarded("mail", lambda: notifications.send_due(escrow))
        if _due(timers, "hosted usage", HOSTED_USAGE_INTERVAL_S):
            _guarded("hosted usage", lambda: hosted_usage.report_due(escrow))
            _guarded("study captures", lambda: study_captures.report_due(escrow))
        if not _guarded("fixity", fixity.step) and not busy:
            stop.wait(poll_s)
    _shut_down(escrow, name)


def _due(timers: dict[str, float], what: str, interval_s: float) -> bool:
    """Whether `what` is due; if so, its next time is set (whether it then works or not)."""
    if time.monotonic() < timers[what]:
        return False
    timers[what] = time.monotonic() + interval_s
    return True


def _guarded(what: str, step: Callable[[], object]) -> bool:
    """Run one step of the loop; a failure is logged, and the loop goes on (False)."""
    try:
        return bool(step())
    except Exception:  # the worker must outlive one bad job, a store outage or a database blip
        log.exception("worker: %s failed", what)
        return False


def _shut_down(escrow: Escrow, name: str) -> None:
    try:
        copies.checkpoint_and_mirror(escrow)
        _say_gone(escrow, name)
    except Exception:
        log.exception("worker shutdown: the checkpoint could not be signed and mirrored")
