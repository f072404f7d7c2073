import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from broker.adapters.db.models import Deposit, Job
from broker.domain.clock import now
from broker.domain.principals import OPERATOR
from broker.services import health, worker
from broker.services.deposits import describe
from broker.services.verification import run_verification


def queue_job(escrow, lab) -> str:
    deposit = lab.open({"a": b"data"})
    lab.upload(deposit, "a", b"data")
    assert lab.post(f"/api/v1/deposits/{deposit['deposit_id']}/finalize").status_code == 202
    return deposit["deposit_id"]


def the_job(escrow) -> Job:
    with escrow.uow() as uow:
        job = uow.session.scalar(select(Job))
        uow.session.expunge(job)
        return job


def set_job(escrow, **values) -> None:
    with escrow.uow() as uow:
        uow.session.execute(update(Job).values(**values))
        uow.commit()


def break_identity(escrow, deposit_id) -> bytes:
    """Make the deposit's verification unable to run (its key cannot be unwrapped)."""
    with escrow.uow() as uow:
        deposit = uow.session.get(Deposit, deposit_id)
        wrapped, deposit.wrapped_identity = deposit.wrapped_identity, b"not a wrapped key"
        uow.commit()
        return wrapped


def the_deposit(escrow, deposit_id) -> dict:
    with escrow.uow() as uow:
        return describe(uow.session.get(Deposit, deposit_id))


def test_a_claimed_job_is_not_claimed_again_while_its_lease_holds(escrow, lab):
    queue_job(escrow, lab)
    first = worker.claim_job(escrow, "w1")
    assert first is not None
    assert worker.claim_job(escrow, "w2") is None
    job = the_job(escrow)
    assert job.lease_until - job.locked_at == timedelta(seconds=escrow.settings.job_lease_s)


def test_a_job_whose_lease_lapsed_is_taken_over_and_the_dead_worker_cannot_finish_it(escrow, lab):
    deposit_id = queue_job(escrow, lab)
    dead = worker.claim_job(escrow, "dead")
    set_job(escrow, lease_until=now() - timedelta(seconds=1))
    alive = worker.claim_job(escrow, "alive")
    assert alive is not None and alive.job_id == dead.job_id
    assert the_job(escrow).attempts == 2

    worker.run_job(escrow, dead)  # the "dead" one wakes up: its result must not land
    assert the_deposit(escrow, deposit_id)["state"] == "verifying"
    assert the_job(escrow).locked_by == "alive"

    worker.run_job(escrow, alive)
    assert the_deposit(escrow, deposit_id)["state"] == "sealed"
    job = the_job(escrow)
    assert (job.state, job.locked_by, job.lease_until) == ("done", None, None)
    assert job.finished_at is not None


def test_a_failed_attempt_backs_off_before_the_next(escrow, lab):
    deposit_id = queue_job(escrow, lab)
    break_identity(escrow, deposit_id)
    assert worker.run_pending(escrow) == 1
    job = the_job(escrow)
    assert job.state == "queued" and job.error
    wait = job.run_after - now()
    assert timedelta(seconds=escrow.settings.job_backoff_s - 2) < wait
    assert worker.claim_job(escrow, "w") is None  # not before its time
    shown = the_deposit(escrow, deposit_id)["verification"]
    assert shown["state"] == "queued" and shown["attempts"] == 1 and shown["next_attempt_at"]
    assert worker.backoff(escrow, 3) == 4 * worker.backoff(escrow, 1)


def test_a_job_that_keeps_failing_ends_failed_and_says_what_to_do(escrow, lab):
    deposit_id = queue_job(escrow, lab)
    wrapped = break_identity(escrow, deposit_id)
    set_job(escrow, attempts=escrow.settings.job_max_attempts - 1)
    worker.run_pending(escrow)
    shown = the_deposit(escrow, deposit_id)
    assert shown["state"] == "failed"
    assert "verification could not run" in shown["failure"]
    assert f"escrow verify {deposit_id}" in shown["failure_hint"]
    assert shown["verification"]["state"] == "failed"
    assert the_job(escrow).finished_at is not None

    # The operator fixes the cause and retries: the deposit verifies and seals.
    with escrow.uow() as uow:
        uow.session.get(Deposit, deposit_id).wrapped_identity = wrapped
        uow.commit()
    assert run_verification(escrow, deposit_id, OPERATOR).ok
    shown = the_deposit(escrow, deposit_id)
    assert (shown["state"], shown["failure"], shown["failure_hint"]) == ("sealed", None, None)


def test_a_job_whose_workers_keep_dying_ends_failed(escrow, lab):
    deposit_id = queue_job(escrow, lab)
    set_job(
        escrow,
        state="running",
        locked_by="gone",
        attempts=escrow.settings.job_max_attempts,
        lease_until=now() - timedelta(seconds=1),
    )
    assert worker.claim_job(escrow, "w") is None
    job = the_job(escrow)
    assert job.state == "failed" and "(gone) stopped without finishing" in job.error
    shown = the_deposit(escrow, deposit_id)
    assert shown["state"] == "failed" and "escrow verify" in shown["failure_hint"]


def test_a_worker_stopping_hands_its_job_back_uncounted(escrow, lab):
    deposit_id = queue_job(escrow, lab)
    lease = worker.claim_job(escrow, "w")
    stop = threading.Event()
    stop.set()
    worker.run_job(escrow, lease, stop)
    job = the_job(escrow)
    assert (job.state, job.attempts, job.locked_by) == ("queued", 0, None)
    assert the_deposit(escrow, deposit_id)["state"] == "verifying"


def test_a_heartbeat_renews_the_lease_and_notices_when_it_is_lost(escrow, lab):
    queue_job(escrow, lab)
    lease = worker.claim_job(escrow, "w")
    set_job(escrow, lease_until=now())
    assert worker.renew(escrow, lease)
    assert the_job(escrow).lease_until > now() + timedelta(seconds=1)
    set_job(escrow, locked_by="other")
    assert not worker.renew(escrow, lease)
    with escrow.uow() as uow:
        assert [w.name for w in health.live_workers(uow, escrow.settings.job_lease_s)] == ["w"]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SKIP LOCKED is PostgreSQL's
def test_on_postgres_a_job_locked_by_another_transaction_is_skipped(escrow, lab):
    assert escrow.engine.dialect.name == "postgresql"
    queue_job(escrow, lab)
    queue_job_two = lab.open({"b": b"x"}, version="2")
    lab.upload(queue_job_two, "b", b"x")
    lab.post(f"/api/v1/deposits/{queue_job_two['deposit_id']}/finalize")
    with Session(escrow.engine) as holder:
        locked = holder.scalar(select(Job).order_by(Job.id).limit(1).with_for_update())
        claimed = worker.claim_job(escrow, "w")
        assert claimed is not None and claimed.job_id != locked.id


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_verification_holds_no_transaction_while_it_streams(escrow, lab):
    """Looked at from PostgreSQL itself, in the middle of the payload's decryption."""
    from sqlalchemy import create_engine, text

    deposit_id = queue_job(escrow, lab)
    database = escrow.engine.url.database
    seen: list[list[str]] = []
    observer = create_engine(escrow.engine.url)

    def look() -> bool:
        with observer.connect() as connection:
            seen.append(list(connection.scalars(text(
                "SELECT state FROM pg_stat_activity WHERE datname = :db AND pid <> "
                "pg_backend_pid() AND state LIKE 'idle in transaction%'"), {"db": database})))
        return False

    try:
        assert run_verification(escrow, deposit_id, OPERATOR, cancelled=look).ok
    finally:
        observer.dispose()
    assert seen and all(states == [] for states in seen)
    assert the_deposit(escrow, deposit_id)["state"] == "sealed"
