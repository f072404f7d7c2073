"""Fixity on one copy (the local store on disk): re-verification oldest first, checksums between
full checks, a rate budget, and failures that are named, marked, logged and shown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from durability_support import Clock, audit_events, flip_byte, payload_key, rot_on_disk, seal

from broker.adapters.db.models import Deposit
from broker.domain.principals import OPERATOR, SYSTEM
from broker.services.fixity import FixitySchedule, plan, run_fixity


def stored(escrow, deposit_id: str) -> Deposit:
    with escrow.uow() as uow:
        deposit = uow.session.get(Deposit, deposit_id)
        deposit.files
        uow.session.expunge_all()
        return deposit


def set_verified(escrow, deposit_id: str, when: datetime | None) -> None:
    with escrow.uow() as uow:
        uow.session.get(Deposit, deposit_id).last_verified_at = when
        uow.commit()


def test_a_good_deposit_passes_and_the_result_is_on_the_log(escrow, sealed, client):
    before = stored(escrow, sealed["deposit_id"]).last_verified_at
    report = run_fixity(escrow, OPERATOR)
    assert report.ok and [d.deposit_id for d in report.deposits] == [sealed["deposit_id"]]
    assert report.deposits[0].method == "full" and report.deposits[0].copies == ["primary"]
    passed = audit_events(escrow, "fixity.passed")
    assert [e["subject"]["deposit"] for e in passed] == [sealed["deposit_id"]]
    assert passed[0]["subject"]["model"] == "acme-ai/gpt-small"
    assert passed[0]["details"]["method"] == "full" and passed[0]["details"]["objects"] == 7
    completed = audit_events(escrow, "fixity.completed")
    assert completed[0]["details"]["deposits"] == 1 and completed[0]["details"]["failed"] == []
    after = stored(escrow, sealed["deposit_id"]).last_verified_at
    assert after > before
    listed = client.get("/api/v1/models").json["models"][0]["versions"][0]
    assert listed["last_verified_at"] == after.isoformat()


def test_a_flipped_byte_in_a_payload_is_named_and_marks_the_deposit(
    escrow, sealed, primary_root, operator_page
):
    key = payload_key(sealed)
    rot_on_disk(primary_root, key)
    verified = stored(escrow, sealed["deposit_id"]).last_verified_at
    report = run_fixity(escrow, OPERATOR)
    assert not report.ok
    [problem] = report.deposits[0].problems
    assert (problem.name, problem.key, problem.copy) == ("model.safetensors", key, "primary")
    assert "does not decrypt" in problem.problem
    [failed] = audit_events(escrow, "fixity.failed")
    assert failed["subject"]["deposit"] == sealed["deposit_id"]
    assert failed["details"]["files"][0]["name"] == "model.safetensors"
    assert failed["details"]["files"][0]["key"] == key
    deposit = stored(escrow, sealed["deposit_id"])
    assert deposit.state == "sealed" and deposit.last_verified_at == verified
    assert deposit.failure.startswith("fixity: model.safetensors (primary")
    assert [f.error is not None for f in deposit.files] == [f.path == "model.safetensors"
                                                           for f in deposit.files]
    page = operator_page()
    assert sealed["deposit_id"] in page and ">fixity failed</span>" in page
    assert "model.safetensors (primary" in page and "1 failed" in page


def test_a_marked_deposit_is_checked_in_full_until_it_passes(escrow, sealed, primary_root):
    key = payload_key(sealed)
    rot_on_disk(primary_root, key)
    assert not run_fixity(escrow, OPERATOR).ok
    rot_on_disk(primary_root, key)  # the operator restored the byte
    report = run_fixity(escrow, OPERATOR, limit=0)
    assert report.ok and report.deposits[0].method == "full"
    assert stored(escrow, sealed["deposit_id"]).failure is None


def test_the_command_prints_the_failure_and_exits_1(escrow, sealed, primary_root, monkeypatch):
    from broker.cli import main

    rot_on_disk(primary_root, payload_key(sealed))
    monkeypatch.setenv("ESCROW_DATA_DIR", str(escrow.settings.data_dir))
    monkeypatch.setenv("ESCROW_DATABASE_URL", escrow.settings.database_url)
    result = CliRunner().invoke(main, ["fixity", "run", "--max-bytes-per-s", "0"])
    assert result.exit_code == 1, result.output
    assert f"FAILED   acme-ai/gpt-small@2024-05 ({sealed['deposit_id']}): model.safetensors" \
        in result.output
    assert "1 FAILED" in result.output
    as_json = CliRunner().invoke(main, ["fixity", "run", "--json", "--max-bytes-per-s", "0"])
    document = json.loads(as_json.output.splitlines()[-1])
    assert document["ok"] is False
    assert document["deposits"][0]["problems"][0]["name"] == "model.safetensors"


def test_deposits_are_checked_oldest_check_first(escrow, client):
    made = [seal(client, escrow, version=v) for v in ("v1", "v2", "v3")]
    never, old, recent = (m["deposit_id"] for m in made)
    now = datetime.now(UTC)
    set_verified(escrow, never, None)
    set_verified(escrow, old, now - timedelta(days=30))
    set_verified(escrow, recent, now - timedelta(days=1))
    with escrow.uow() as uow:
        assert plan(uow, None) == [(never, "full"), (old, "full"), (recent, "full")]
        assert plan(uow, 2) == [(never, "full"), (old, "full"), (recent, "checksums")]
    report = run_fixity(escrow, OPERATOR, limit=1)
    assert [(d.deposit_id, d.method) for d in report.deposits] == [
        (never, "full"), (old, "checksums"), (recent, "checksums")]


def test_between_full_checks_the_stores_checksums_are_compared(escrow, sealed):
    verified = stored(escrow, sealed["deposit_id"]).last_verified_at
    report = run_fixity(escrow, OPERATOR, limit=0)
    assert report.ok and report.deposits[0].method == "checksums"
    assert report.bytes_read == 0  # HEAD requests only
    assert stored(escrow, sealed["deposit_id"]).last_verified_at == verified
    assert audit_events(escrow, "fixity.passed")[0]["details"]["method"] == "checksums"
    flip_byte(escrow.store, payload_key(sealed))  # rewritten: a new ETag, the same size
    report = run_fixity(escrow, OPERATOR, limit=0)
    result = report.deposits[0]
    assert not report.ok and result.method == "full"
    assert "changed since it was last checked" in result.escalated[0].problem
    assert result.problems[0].name == "model.safetensors"


def test_a_missing_header_is_restored_from_the_database(escrow, sealed):
    key = f"deposits/{sealed['deposit_id']}/files/0.header"
    header = escrow.store.get_bytes(key)
    escrow.store.delete(key)
    report = run_fixity(escrow, OPERATOR, limit=0)  # found by its HEAD, then checked in full
    assert report.ok
    [repair] = report.deposits[0].repairs
    assert (repair.key, repair.copy, repair.source, repair.problem) == (
        key, "primary", "database", "is missing")
    assert escrow.store.get_bytes(key) == header
    [event] = audit_events(escrow, "fixity.repaired")
    assert event["details"] == {"object": key, "copy": "primary", "source": "database",
                                "problem": "is missing"}


def test_a_run_keeps_to_its_byte_rate(escrow, sealed):
    clock = Clock()
    rate = 20_000
    report = run_fixity(escrow, OPERATOR, max_bytes_per_s=rate, clock=clock, sleep=clock.sleep)
    assert report.ok and report.bytes_read > 81_048  # the payloads, headers, manifest, …
    # Time moved only by the pauses: reading took as long as the budget allows (less the
    # one second of burst it starts with).
    assert clock.now - 1000.0 == pytest.approx(report.bytes_read / rate - 1.0, abs=0.01)
    assert report.slept_s == pytest.approx(report.bytes_read / rate - 1.0, abs=0.01)
    assert max(clock.sleeps) < 80_000 / rate  # paced chunk by chunk, not once at the end


def test_the_worker_runs_fixity_when_it_is_due(escrow, sealed):
    object.__setattr__(escrow, "settings", escrow.settings.with_overrides(fixity_interval_s=3600))
    clock = Clock()
    schedule = FixitySchedule(escrow, SYSTEM, sleep=clock.sleep, clock=clock)
    assert schedule.step() is True  # due (never ran): the run starts and checks the deposit
    assert schedule.run is None and len(audit_events(escrow, "fixity.completed")) == 1
    clock.now += FixitySchedule.LOOK_EVERY_S
    assert schedule.step() is False  # the last run ended less than an hour ago
    assert audit_events(escrow, "fixity.passed")[0]["actor"]["kind"] == "system"


def test_the_worker_does_no_fixity_when_it_is_off(escrow, sealed):
    object.__setattr__(escrow, "settings", escrow.settings.with_overrides(fixity_interval_s=0))
    clock = Clock()
    assert FixitySchedule(escrow, SYSTEM, sleep=clock.sleep, clock=clock).step() is False
    assert audit_events(escrow, "fixity.completed") == []
