"""`escrow recover`'s service: a database rebuilt from the bucket and the master key alone, or,
when the bucket is damaged or the key is wrong, a refusal naming the problem that writes nothing."""

from __future__ import annotations

import pytest
from access_support import WEIGHTS, mirror_whole_log
from sqlalchemy import func, select

from broker.adapters.db.models import AuditEvent, Deposit, Organisation
from broker.container import build_escrow
from broker.services import audit
from broker.services.recovery import RecoveryFailed, recover


@pytest.fixture
def bucket(escrow, sealed, make_person):
    """The deposit sealed, a person on the log, a checkpoint signed: its entries and note
    mirrored to the bucket."""
    make_person("rosa@uni.example")
    with escrow.uow() as uow:
        return mirror_whole_log(escrow, uow)


def count(escrow, table) -> int:
    with escrow.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(table))


def test_a_lost_database_comes_back_from_the_bucket(escrow, sealed, bucket, fresh):
    result = recover(fresh)
    assert result.deposits == [sealed["deposit_id"]]
    assert result.verified == {sealed["deposit_id"]: True}
    assert result.entries == bucket and result.checkpoint == bucket
    with fresh.uow() as uow:
        deposit = uow.session.get(Deposit, sealed["deposit_id"])
        assert deposit.state == "sealed" and deposit.model.full_name == "acme-ai/gpt-small"
        assert sorted(f.path for f in deposit.files) == sorted(WEIGHTS)
        assert deposit.last_verified_at is not None
        check = audit.self_check(uow)
        assert check.size > bucket  # the old log, then recovery and verification on top
    with escrow.uow() as old, fresh.uow() as new:
        first = [bytes(x) for x in old.session.scalars(
            select(AuditEvent.leaf).where(AuditEvent.seq < bucket).order_by(AuditEvent.seq))]
        again = [bytes(x) for x in new.session.scalars(
            select(AuditEvent.leaf).where(AuditEvent.seq < bucket).order_by(AuditEvent.seq))]
        assert first == again
        actions = list(new.session.scalars(
            select(AuditEvent.action).where(AuditEvent.seq >= bucket).order_by(AuditEvent.seq)))
    assert actions[0] == "escrow.recovered" and "deposit.verification_passed" in actions
    assert audit.verify_deployment(fresh)["size"] == check.size


def test_a_missing_object_stops_recovery_and_writes_nothing(escrow, sealed, bucket, fresh):
    key = f"deposits/{sealed['deposit_id']}/files/1.payload"
    escrow.store.delete(key)
    with pytest.raises(RecoveryFailed, match=f"object deposits/{sealed['deposit_id']}/files/1"
                       r"\.payload \(.*\) is missing") as raised:
        recover(fresh)
    assert "Nothing was written" in raised.value.message and "0 deposit(s)" in raised.value.message
    assert count(fresh, Deposit) == 0 and count(fresh, Organisation) == 0


def test_a_manifest_whose_signature_fails_is_named(escrow, sealed, bucket, fresh):
    key = f"deposits/{sealed['deposit_id']}/manifest.json"
    escrow.store.put_bytes(key, escrow.store.get_bytes(key).replace(b"gpt-small", b"gpt-smoll"))
    with pytest.raises(RecoveryFailed, match=f"deposit {sealed['deposit_id']}: its manifest's "
                       "signature does not verify"):
        recover(fresh)
    assert count(fresh, Deposit) == 0


def test_a_truncated_audit_batch_is_named(escrow, sealed, bucket, fresh):
    [batch] = escrow.store.list_keys(audit.ENTRIES_PREFIX)
    lines = escrow.store.get_bytes(batch).split(b"\n")
    escrow.store.put_bytes(batch, b"\n".join(lines[:-3]) + b"\n")
    with pytest.raises(RecoveryFailed, match=f"batch {batch} is truncated"):
        recover(fresh)
    assert count(fresh, Deposit) == 0


def test_the_wrong_master_key_is_named(escrow, sealed, bucket, fresh, tmp_path):
    from broker.adapters.custody.local import LocalCustody

    LocalCustody.create_key_file(tmp_path / "other.key")
    wrong = build_escrow(fresh.settings.with_overrides(key_file=tmp_path / "other.key"))
    with pytest.raises(RecoveryFailed, match="cannot be unwrapped .* master key"):
        recover(wrong)
    wrong.engine.dispose()
    assert count(fresh, Deposit) == 0


def test_a_database_in_use_is_refused(escrow, sealed, bucket):
    with pytest.raises(RecoveryFailed, match="the database is not empty"):
        recover(escrow)


def test_a_manifest_key_other_than_the_pinned_one_is_refused(escrow, sealed, bucket, fresh):
    with pytest.raises(RecoveryFailed, match="not the pinned one"):
        recover(fresh, manifest_key=b"\x01" * 32)


def test_the_user_ids_the_log_names_stay_reserved(escrow, bucket, fresh):
    from broker.adapters.db.models import User
    from broker.domain.principals import OPERATOR
    from broker.services import people
    from broker.services.recovery import RECOVERED_ISSUER

    with escrow.uow() as uow:
        before = set(uow.session.scalars(select(User.id)))
    recover(fresh)
    with fresh.uow() as uow:
        held = uow.session.scalars(select(User).where(User.issuer == RECOVERED_ISSUER)).all()
        assert {u.id for u in held} == before and all(u.disabled_at for u in held)
        newcomer = people.upsert_user(uow, OPERATOR, "https://idp.uni.example", "sub-ada",
                                      people.Claims(email="ada@uni.example", email_verified=True))
        uow.commit()
        assert newcomer.id > max(before)


def test_overlapping_batches_from_two_mirroring_processes_are_read_once(escrow, bucket, fresh):
    [batch] = escrow.store.list_keys(audit.ENTRIES_PREFIX)
    lines = escrow.store.get_bytes(batch).split(b"\n")[:-1]
    overlap = audit.batch_key(2, 5)  # what a second process listing late would have written
    escrow.store.put_bytes(overlap, b"".join(line + b"\n" for line in lines[2:5]))
    assert recover(fresh).entries == bucket


def test_an_overlap_that_differs_is_named(escrow, bucket, fresh):
    [batch] = escrow.store.list_keys(audit.ENTRIES_PREFIX)
    lines = escrow.store.get_bytes(batch).split(b"\n")[:-1]
    forged = [lines[2], lines[4], lines[3]]
    escrow.store.put_bytes(audit.batch_key(2, 5), b"".join(x + b"\n" for x in forged))
    with pytest.raises(RecoveryFailed, match="holds another entry 3 than an earlier batch"):
        recover(fresh)
    assert count(fresh, Deposit) == 0


def test_a_missing_batch_is_named_with_the_entries_it_held(escrow, bucket, fresh):
    [batch] = escrow.store.list_keys(audit.ENTRIES_PREFIX)
    lines = escrow.store.get_bytes(batch).split(b"\n")[:-1]
    escrow.store.delete(batch)
    escrow.store.put_bytes(audit.batch_key(4, len(lines)),
                           b"".join(x + b"\n" for x in lines[4:]))
    with pytest.raises(RecoveryFailed, match=r"entries 0\.\.3 are missing"):
        recover(fresh)


def test_a_log_in_overlapping_batches_is_rebuilt_a_chunk_at_a_time(escrow, bucket, fresh,
                                                                     monkeypatch):
    """The log is read one batch at a time and written a chunk at a time: re-mirrored as
    batches of 5 entries every 3 (and one inside another), written in chunks of 4, every
    entry comes back with the tree nodes it had."""
    from broker.services.recovery import log as recovery_log

    monkeypatch.setattr(recovery_log, "_WRITE_CHUNK", 4)
    [batch] = escrow.store.list_keys(audit.ENTRIES_PREFIX)
    lines = escrow.store.get_bytes(batch).split(b"\n")[:-1]
    assert len(lines) == bucket > 8  # more than two chunks
    escrow.store.delete(batch)
    spans = [(start, min(start + 5, len(lines))) for start in range(0, len(lines), 3)]
    for start, end in [*spans, (4, 6)]:
        escrow.store.put_bytes(audit.batch_key(start, end),
                               b"".join(x + b"\n" for x in lines[start:end]))
    assert recover(fresh).entries == bucket
    nodes = select(AuditEvent.seq, AuditEvent.leaf_hash, AuditEvent.subtrees).where(
        AuditEvent.seq < bucket).order_by(AuditEvent.seq)
    with escrow.uow() as old, fresh.uow() as new:
        assert new.session.execute(nodes).all() == old.session.execute(nodes).all()
