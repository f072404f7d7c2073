"""A deposit's files are verified by separate jobs, so that several workers split one deposit;
the job that records the last file decides the deposit, exactly once."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.orm import Session

from broker.adapters.db.models import AuditEvent, Deposit, Job
from broker.services import worker
from broker.services.deposits import describe

FILES = {f"shard-{n}.bin": hashlib.sha256(bytes([n])).digest() * (1000 + n) for n in range(6)}


def finalised(lab, files: dict[str, bytes] = FILES, corrupt: str | None = None,
              escrow=None) -> str:
    deposit = lab.open(files)
    for path, data in files.items():
        assert lab.upload(deposit, path, data).status_code == 200
    if corrupt is not None:  # one flipped byte in the stored payload of `corrupt`
        index = next(f["index"] for f in deposit["files"] if f["path"] == corrupt)
        key = f"deposits/{deposit['deposit_id']}/files/{index}.payload"
        stored = bytearray(escrow.store.get_bytes(key))
        stored[20] ^= 1
        escrow.store.put_bytes(key, bytes(stored))
    assert lab.post(f"/api/v1/deposits/{deposit['deposit_id']}/finalize").status_code == 202
    return deposit["deposit_id"]


def jobs(escrow, deposit_id: str) -> list[Job]:
    with escrow.uow() as uow:
        found = list(uow.session.scalars(
            select(Job).where(Job.deposit_id == deposit_id).order_by(Job.id)))
        uow.session.expunge_all()
        return found


def shown(escrow, deposit_id: str) -> dict:
    with escrow.uow() as uow:
        return describe(uow.session.get(Deposit, deposit_id))


def events(escrow, action: str) -> list[dict]:
    with escrow.uow() as uow:
        return [json.loads(leaf)["details"] for leaf in uow.session.scalars(
            select(AuditEvent.leaf).where(AuditEvent.action == action))]


def test_finalising_queues_one_job_per_file(escrow, lab):
    deposit_id = finalised(lab)
    queued = jobs(escrow, deposit_id)
    assert sorted(j.file_idx for j in queued) == sorted(
        f["index"] for f in shown(escrow, deposit_id)["files"])
    assert {j.state for j in queued} == {"queued"}
    assert shown(escrow, deposit_id)["verification"] == {
        "state": "queued", "attempts": 0, "error": None, "next_attempt_at": None,
        "worker": None, "heartbeat_at": None}


def test_two_workers_split_a_deposit_and_it_is_sealed_once(escrow, lab):
    deposit_id = finalised(lab)
    # Each worker holds a file of the deposit at the same time...
    first, second = worker.claim_job(escrow, "w1"), worker.claim_job(escrow, "w2")
    assert first and second and first.job_id != second.job_id
    seen = shown(escrow, deposit_id)["verification"]
    assert (seen["state"], seen["worker"], seen["attempts"]) == ("running", "w1, w2", 1)
    # ...then each finishes its own and takes more, until none is left.
    ran: dict[str, int] = {}

    def work(lease: worker.Lease) -> None:
        worker.run_job(escrow, lease)
        ran[lease.worker] = 1 + worker.run_pending(escrow, lease.worker)

    threads = [threading.Thread(target=work, args=(lease,)) for lease in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert ran["w1"] >= 1 and ran["w2"] >= 1 and ran["w1"] + ran["w2"] == len(FILES)
    deposit = shown(escrow, deposit_id)
    assert deposit["state"] == "sealed"
    assert {f["state"] for f in deposit["files"]} == {"verified"}
    assert deposit["verification"]["state"] == "done"
    assert [(j.state, j.attempts) for j in jobs(escrow, deposit_id)] == [("done", 1)] * len(FILES)
    assert len(events(escrow, "deposit.sealed")) == 1
    assert events(escrow, "deposit.verification_passed") == [{"files": len(FILES)}]
    assert escrow.store.get_bytes(f"deposits/{deposit_id}/manifest.json")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # row locks: PostgreSQL's
def test_two_last_files_finishing_at_the_same_moment_seal_the_deposit_once(escrow, lab):
    """Both finishers are held at the deposit's row lock, then let go together: one of them
    sees the other's file recorded, and seals; the other does not."""
    deposit_id = finalised(lab, {"a.bin": b"a" * 5000, "b.bin": b"b" * 7000})
    leases = [worker.claim_job(escrow, "w1"), worker.claim_job(escrow, "w2")]
    observer = create_engine(escrow.engine.url)
    try:
        with Session(escrow.engine) as holder:
            holder.scalar(select(Deposit).where(Deposit.id == deposit_id).with_for_update())
            threads = [threading.Thread(target=worker.run_job, args=(escrow, lease))
                       for lease in leases]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 20
            while waiting_on_a_lock(observer) < 2:
                assert time.monotonic() < deadline, "the finishers never reached the lock"
                time.sleep(0.05)
            holder.commit()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        observer.dispose()
    assert shown(escrow, deposit_id)["state"] == "sealed"
    assert [j.state for j in jobs(escrow, deposit_id)] == ["done", "done"]
    assert len(events(escrow, "deposit.sealed")) == 1
    assert len(events(escrow, "deposit.verification_passed")) == 1


def waiting_on_a_lock(observer) -> int:
    with observer.connect() as connection:
        return connection.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"))


def test_a_bad_file_among_many_fails_the_deposit_naming_it(escrow, lab):
    deposit_id = finalised(lab, corrupt="shard-3.bin", escrow=escrow)
    assert worker.run_pending(escrow) == len(FILES)  # every file is checked, as before
    deposit = shown(escrow, deposit_id)
    assert deposit["state"] == "failed"
    assert deposit["failure"].startswith("shard-3.bin: payload does not decrypt")
    assert deposit["failure"].count("shard-") == 1  # the other files are fine
    assert deposit["failure_hint"] == (
        "the files stored are not what was declared: deposit this version again from the "
        "original files (a failed deposit is never sealed)")
    states = {f["path"]: f["state"] for f in deposit["files"]}
    # The others were verified, each by its job; the deposit was not: they wait, as uploaded.
    assert states.pop("shard-3.bin") == "failed" and set(states.values()) == {"uploaded"}
    (failed,) = events(escrow, "deposit.verification_failed")
    assert [(f["path"], f["ok"]) for f in failed["files"]] == [
        (path, path != "shard-3.bin") for path in sorted(FILES)]
    assert events(escrow, "deposit.sealed") == []

    # Deposited again: the bad file alone is sent again, and the whole deposit seals.
    again = lab.open(FILES)
    assert again["deposit_id"] == deposit_id and again["state"] == "open"
    assert lab.upload(again, "shard-3.bin", FILES["shard-3.bin"]).status_code == 200
    assert lab.post(f"/api/v1/deposits/{deposit_id}/finalize").status_code == 202
    assert worker.run_pending(escrow) == len(FILES)
    assert shown(escrow, deposit_id)["state"] == "sealed"


def test_a_file_that_cannot_be_verified_fails_the_deposit_and_ends_its_other_jobs(escrow, lab):
    from test_worker import break_identity

    deposit_id = finalised(lab)
    break_identity(escrow, deposit_id)
    with escrow.uow() as uow:
        uow.session.execute(update(Job).values(attempts=escrow.settings.job_max_attempts - 1))
        uow.commit()
    assert worker.run_pending(escrow) == 1  # the first to give up ends them all
    deposit = shown(escrow, deposit_id)
    assert deposit["state"] == "failed"
    assert deposit["failure"].startswith("verification could not run: ")
    assert f"escrow verify {deposit_id}" in deposit["failure_hint"]
    assert deposit["verification"]["state"] == "failed"
    assert {f["state"] for f in deposit["files"]} == {"uploaded"}
    ended = jobs(escrow, deposit_id)
    assert {j.state for j in ended} == {"failed"}
    assert sum(j.error.startswith("not run: the deposit failed") for j in ended) == len(FILES) - 1
    assert len(events(escrow, "deposit.verification_failed")) == 1


def test_a_worker_that_loses_a_file_job_writes_nothing_and_the_new_one_finishes(escrow, lab):
    deposit_id = finalised(lab)
    dead = worker.claim_job(escrow, "dead")
    with escrow.uow() as uow:  # its lease lapses
        uow.session.execute(update(Job).where(Job.id == dead.job_id).values(
            lease_until=uow.session.scalar(select(Job.locked_at).where(Job.id == dead.job_id))))
        uow.commit()
    assert worker.run_pending(escrow, "alive") == len(FILES)  # the lapsed one included
    worker.run_job(escrow, dead)  # wakes up: its result must not land
    deposit = shown(escrow, deposit_id)
    assert deposit["state"] == "sealed" and deposit["verification"]["attempts"] == 2
    assert len(events(escrow, "deposit.sealed")) == 1
