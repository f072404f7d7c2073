from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.adapters.db.models import Deposit, Job
from broker.services import worker


def queue_job(escrow, lab) -> str:
    deposit = lab.open({"a": b"data"})
    lab.upload(deposit, "a", b"data")
    assert lab.post(f"/api/v1/deposits/{deposit['deposit_id']}/finalize").status_code == 202
    return deposit["deposit_id"]


def test_a_claimed_job_is_not_claimed_again(escrow, lab):
    queue_job(escrow, lab)
    first = worker.claim_job(escrow, "w1")
    assert first is not None
    assert worker.claim_job(escrow, "w2") is None


def test_a_job_left_running_by_a_dead_worker_is_taken_over(escrow, lab):
    queue_job(escrow, lab)
    job_id = worker.claim_job(escrow, "dead")
    with escrow.uow() as uow:
        job = uow.session.get(Job, job_id)
        job.locked_at -= worker.STALE_AFTER + timedelta(seconds=1)
        uow.commit()
    assert worker.claim_job(escrow, "alive") == job_id


def test_a_job_that_keeps_failing_fails_its_deposit_instead_of_leaving_it_verifying(escrow, lab):
    deposit_id = queue_job(escrow, lab)
    with escrow.uow() as uow:
        uow.session.scalar(select(Job)).attempts = worker.MAX_ATTEMPTS - 1
        uow.session.get(Deposit, deposit_id).wrapped_identity = b"not a wrapped key"
        uow.commit()
    worker.run_pending(escrow)
    with escrow.uow() as uow:
        deposit = uow.session.get(Deposit, deposit_id)
        assert deposit.state == "failed"
        assert "verification could not run" in deposit.failure


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
        assert claimed is not None and claimed != locked.id
