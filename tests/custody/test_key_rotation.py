"""`escrow admin key rotate`, local to local: every deposit identity and signing key re-wrapped
under a new master key while brokers keep running, resumable, and refused before any change
when a secret does not open."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import select

from broker.adapters.custody.local import LocalCustody, key_id_of, read_key_file, retired_key_path
from broker.adapters.db.models import AuditEvent
from broker.container import Escrow
from broker.errors import CustodyError
from broker.services.master_key import rotate

from .support import bucket_keys, fresh_escrow, keys_in_use, make_deposits, plaintexts


def local_key(escrow: Escrow) -> str:
    return f"local:{key_id_of(read_key_file(escrow.settings.key_file))}"


def test_rotation_rewraps_every_secret_under_a_new_key(escrow, deposits):
    before, old_key = plaintexts(escrow), local_key(escrow)
    report = rotate(escrow, settle_s=0)

    assert report.key == local_key(escrow) != old_key
    assert set(keys_in_use(escrow).values()) == {report.key}
    assert bucket_keys(escrow, deposits) == {report.key}
    assert report.rewrapped == len(before) == 6  # 4 deposits, 2 signing keys
    assert not report.resumed and report.retired == [old_key]
    with fresh_escrow(escrow) as other:
        assert plaintexts(other) == before


def test_the_old_key_is_kept_beside_the_key_file_until_the_operator_destroys_it(escrow, deposits):
    old_key_bytes = read_key_file(escrow.settings.key_file)
    report = rotate(escrow, settle_s=0)

    kept = retired_key_path(escrow.settings.key_file, key_id_of(old_key_bytes))
    assert read_key_file(kept) == old_key_bytes
    assert report.configure == []
    assert report.destroyable == [f"{kept} (retired local key {key_id_of(old_key_bytes)})"]


def test_a_running_broker_reads_old_and_new_blobs_while_the_rotation_runs(escrow, deposits):
    before = plaintexts(escrow)
    seen = []

    def halfway(done: int, total: int, label: str) -> None:
        if done == 3:  # some secrets under the new key, some still under the old one
            seen.append(set(keys_in_use(escrow).values()))
            assert plaintexts(escrow) == before  # `escrow` loaded the old key before rotating
            seen.append(make_deposits(escrow, 1, first=10)[0])  # wrapped with the new key

    report = rotate(escrow, settle_s=0, progress=halfway)
    mixed, new_deposit = seen
    assert len(mixed) == 2 and report.key in mixed
    assert keys_in_use(escrow)[f"deposit identity {new_deposit}"] == report.key
    assert {k: v for k, v in plaintexts(escrow).items() if new_deposit not in k} == before


def test_a_deposit_wrapped_with_the_old_key_at_the_switch_is_swept_up(escrow, deposits):
    old_key_file = escrow.settings.key_file.with_name("stale-copy.key")
    old_key_file.write_bytes(escrow.settings.key_file.read_bytes())
    old_key_file.chmod(0o600)
    stale = Escrow(
        escrow.settings, escrow.engine, escrow.sessions, escrow.store, LocalCustody(old_key_file)
    )  # a broker process that has not yet noticed the switch
    late = []

    def during(done: int, total: int, label: str) -> None:
        if not late:
            late.extend(make_deposits(stale, 1, first=20))

    report = rotate(escrow, settle_s=0, progress=during)
    assert keys_in_use(escrow)[f"deposit identity {late[0]}"] == report.key
    assert report.rewrapped == 7
    assert bucket_keys(escrow, [*deposits, *late]) == {report.key}


def test_an_interrupted_rotation_is_finished_by_running_it_again(escrow, deposits):
    before = plaintexts(escrow)

    def crash(done: int, total: int, label: str) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rotate(escrow, settle_s=0, progress=crash)
    new_key = local_key(escrow)
    assert len(set(keys_in_use(escrow).values())) == 2
    with fresh_escrow(escrow) as other:
        assert plaintexts(other) == before

    report = rotate(escrow, settle_s=0)
    assert report.resumed and report.key == new_key  # the same rotation, not another key
    assert report.rewrapped == len(before) - 2
    assert set(keys_in_use(escrow).values()) == {new_key}
    assert plaintexts(escrow) == before


def test_rotating_again_makes_another_key_and_the_first_can_go(escrow, deposits):
    first = rotate(escrow, settle_s=0)
    second = rotate(escrow, settle_s=0)
    assert second.key != first.key and second.retired == [first.key]
    assert len(second.destroyable) == 2  # both retired key files: no secret needs either
    assert set(keys_in_use(escrow).values()) == {second.key}


def test_start_and_finish_are_audited_with_key_ids_and_no_key_material(escrow, deposits):
    old_key_bytes = read_key_file(escrow.settings.key_file)
    report = rotate(escrow, settle_s=0)
    new_key_bytes = read_key_file(escrow.settings.key_file)
    with escrow.uow() as uow:
        events = dict(
            uow.session.execute(
                select(AuditEvent.action, AuditEvent.leaf).where(
                    AuditEvent.action.like("custody.rotation_%")
                )
            ).all()
        )
    assert set(events) == {"custody.rotation_started", "custody.rotation_finished"}
    started, finished = events["custody.rotation_started"], events["custody.rotation_finished"]
    assert report.key.encode() in started and b'"pending":6' in started
    assert report.retired[0].encode() in finished and b'"rewrapped":6' in finished
    for key in (old_key_bytes, new_key_bytes):
        for leaf in (started, finished):
            assert base64.b64encode(key) not in leaf and key.hex().encode() not in leaf


def test_two_rotations_at_once_never_drop_a_new_key(escrow, deposits, monkeypatch):
    """The worst interleaving: rotation B has kept the old key and is about to switch the key
    file when rotation A runs. Unserialised, A would switch to its key and re-wrap with it, and
    B's switch would then drop A's key with every secret wrapped by it. With the lock, A waits,
    then finds the file switched by B and stops, having changed nothing."""
    import threading

    from broker.errors import Conflict
    from broker.services import master_key

    before = plaintexts(escrow)
    real_switch = master_key._switch_key_file
    other: dict[str, object] = {}

    def run_a() -> None:
        try:
            other["report"] = rotate(escrow, settle_s=0)
        except Exception as error:
            other["error"] = error

    def b_switches_late(*args: object) -> None:
        if "thread" not in other:  # B's switch: let A run first, as far as it gets
            other["thread"] = threading.Thread(target=run_a)
            other["thread"].start()
            other["thread"].join(timeout=3)
        real_switch(*args)

    monkeypatch.setattr(master_key, "_switch_key_file", b_switches_late)
    report_b = rotate(escrow, settle_s=0)
    other["thread"].join(timeout=30)
    assert isinstance(other.get("error"), Conflict), other
    assert "another rotation switched" in other["error"].message
    assert set(keys_in_use(escrow).values()) == {report_b.key}
    with fresh_escrow(escrow) as broker:
        assert plaintexts(broker) == before
    # every key a rotation set out to wrap with is still on disk, for the brokers that used it
    with escrow.uow() as uow:
        started = uow.session.scalars(
            select(AuditEvent.leaf).where(AuditEvent.action == "custody.rotation_started")
        ).all()
    key_file = escrow.settings.key_file
    for leaf in started:
        key_id = json.loads(leaf)["subject"]["key"].removeprefix("local:")
        assert key_id == key_id_of(read_key_file(key_file)) or \
            retired_key_path(key_file, key_id).exists(), f"key {key_id} was dropped"


# --- refused before anything changes ----------------------------------------------------------


def snapshot(escrow: Escrow) -> tuple:
    with escrow.uow() as uow:
        actions = list(uow.session.scalars(select(AuditEvent.action)))
    key_dir = escrow.settings.key_file.parent
    files = {p.name: p.read_bytes() for p in sorted(key_dir.iterdir())}
    return keys_in_use(escrow), files, actions


def use_another_key_file(escrow: Escrow) -> Escrow:
    """The operator's ESCROW_KEY_FILE now holds a different key (the wrong file restored)."""
    path = escrow.settings.key_file
    path.unlink()
    LocalCustody.create_key_file(path)
    return escrow


def lose_the_retired_key(escrow: Escrow) -> Escrow:
    """An interrupted rotation whose retired key file was then deleted."""

    def crash(done: int, total: int, label: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rotate(escrow, settle_s=0, progress=crash)
    retired = next(escrow.settings.key_file.parent.glob("master.key.*"))
    retired.unlink()
    return escrow


def open_the_retired_key_to_others(escrow: Escrow) -> Escrow:
    def crash(done: int, total: int, label: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rotate(escrow, settle_s=0, progress=crash)
    next(escrow.settings.key_file.parent.glob("master.key.*")).chmod(0o644)
    return escrow


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (use_another_key_file, r"blob needs local master key [0-9a-f]{16}; this broker holds"),
        (lose_the_retired_key, r"no retired key file .*master\.key\.[0-9a-f]{16}"),
        (open_the_retired_key_to_others, r"accessible by group or others"),
    ],
)
def test_a_secret_that_does_not_open_stops_the_rotation_before_any_change(
    escrow, deposits, damage, named
):
    with fresh_escrow(damage(escrow)) as broker:
        before = snapshot(broker)
        with pytest.raises(CustodyError, match="stopped before changing anything") as raised:
            rotate(broker, settle_s=0)
        assert raised.match(named)
        assert "deposit identity" in raised.value.message
        assert "restore the key they name" in raised.value.hint
        assert snapshot(broker) == before
