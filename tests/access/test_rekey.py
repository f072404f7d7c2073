"""Rekey of a leaked version (`escrow admin version rekey`): every file re-encrypted under fresh
keys and a fresh escrow identity by the worker, new objects checked and switched to in one step,
old objects removed (or left to their Object Lock date), grants revoked; on the local store and
on a real S3 server (moto, Object Lock on), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import urllib.request
from urllib.parse import urlsplit

import pytest
from access_support import WEIGHTS, mirror_whole_log
from click.testing import CliRunner
from sqlalchemy import select, update

from broker import age
from broker.adapters.db.models import Deposit, Job, Rekey
from broker.domain.principals import OPERATOR
from broker.errors import Forbidden
from broker.services import rekey, worker
from broker.services.deposits import deposit_prefix

FILES = {**WEIGHTS, "big.bin": os.urandom(17 * 64 * 1024 + 999)}  # more than one batch
TARGET = "acme-ai/gpt-small@2024-05"


@pytest.fixture(params=["local", "s3"])
def settings(request, settings):
    if request.param == "local":
        return settings
    moto = request.getfixturevalue("moto_endpoint")
    monkeypatch = request.getfixturevalue("monkeypatch")
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"rekey-{secrets.token_hex(4)}"
    moto.client("s3").create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return settings.with_overrides(storage_url=f"s3://{bucket}/escrow",
                                   s3_endpoint_url=moto.url, object_lock_days=1)


@pytest.fixture
def deposited(lab) -> dict:
    return lab.deposit(FILES)


def approve(researcher, reviewer) -> dict:
    request_id = researcher.ask().json["request"]["id"]
    decided = reviewer.post(f"/api/v1/requests/{request_id}/approve")
    assert decided.status_code == 200, decided.json
    return decided.json["grant"]


def plaintext(client, released: dict, identities) -> bytes:
    """header (released) + payload (downloaded with its URL, from the broker or from S3)."""
    url = released["payload_url"]
    if client.application.extensions["escrow"].settings.s3_endpoint_url is None:
        payload = client.get(urlsplit(url).path).data
    else:
        request = urllib.request.Request(url, headers=released["payload_url_headers"])
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
    out = io.BytesIO()
    age.decrypt(io.BytesIO(base64.b64decode(released["header"]) + payload), out, identities)
    return out.getvalue()


def release(researcher, grant: dict, index: int):
    return researcher.post(f"/api/v1/grants/{grant['id']}/files/{index}/release")


def fetch_all(client, researcher, grant: dict) -> dict[str, bytes]:
    found = {}
    for file in grant["files"]:
        released = release(researcher, grant, file["index"])
        assert released.status_code == 200, released.json
        found[file["path"]] = plaintext(client, released.json, researcher.identities)
    return found


def keys_of(escrow, deposit_id: str) -> list[str]:
    return escrow.store.list_keys(deposit_prefix(deposit_id) + "files/")


def test_a_rekey_serves_new_objects_and_revokes_old_grants(
    escrow, client, deposited, researcher, reviewer, events
):
    old = approve(researcher, reviewer)
    assert fetch_all(client, researcher, old) == FILES
    old_keys = keys_of(escrow, deposited["deposit_id"])
    with escrow.uow() as uow:
        old_recipient = uow.session.get(Deposit, deposited["deposit_id"]).recipient

    with escrow.uow() as uow:
        queued = rekey.request_rekey(escrow, uow, OPERATOR, "acme-ai/gpt-small", "2024-05",
                                     "leak report 42")
    assert queued["state"] == "queued" and queued["grants_revoked"] == 1 and queued["changed"]
    # at once: the old grant is revoked, with a clear refusal, on the log
    refused = release(researcher, old, 0)
    assert refused.status_code == 403 and "revoked" in refused.json["detail"]
    assert events("key.release_refused")[-1]["details"]["reason"] == "revoked"
    revoked = events("grant.revoked")
    assert [e["details"]["reason"] for e in revoked] == ["leak report 42"]
    # a grant made while it runs releases nothing until the rekey is done
    during = approve(researcher, reviewer)
    blocked = release(researcher, during, 0)
    assert blocked.status_code == 403 and "re-keyed" in blocked.json["detail"]
    assert events("key.release_refused")[-1]["details"]["reason"] == "rekeying"
    with escrow.uow() as uow:  # asked again: shown, nothing new queued
        again = rekey.request_rekey(escrow, uow, OPERATOR, "acme-ai/gpt-small", "2024-05", "x")
    assert not again["changed"] and again["rekey_id"] == queued["rekey_id"]

    assert worker.run_pending(escrow) == 1
    with escrow.uow() as uow:
        shown = rekey.show(uow, OPERATOR, "acme-ai/gpt-small", "2024-05")
        deposit = uow.session.get(Deposit, deposited["deposit_id"])
        assert deposit.generation == 1 and deposit.rekeying_at is None
        assert deposit.recipient == shown["recipient"] != old_recipient
        wrapped, deposit_id = deposit.wrapped_identity, deposit.id
    assert shown["state"] == "done" and shown["files_done"] == len(FILES), shown
    stored = keys_of(escrow, deposited["deposit_id"])
    new_keys = [key for key in stored if ".r1." in key]
    assert len(new_keys) == 2 * len(FILES)
    if escrow.settings.object_lock_days:  # S3 with Object Lock: the old ones stay locked
        assert shown["old_objects_locked"] == len(old_keys) and shown["old_objects_deleted"] == 0
        assert sorted(set(stored) - set(new_keys)) == sorted(old_keys)
    else:
        assert shown["old_objects_deleted"] == len(old_keys)
        assert not set(old_keys) & set(escrow.store.list_keys(deposit_prefix(deposit_id)))

    # the old grant stays refused; a grant after the rekey decrypts the same plaintext
    assert release(researcher, old, 0).status_code == 403
    assert fetch_all(client, researcher, during) == FILES
    fresh = approve(researcher, reviewer)
    assert fetch_all(client, researcher, fresh) == FILES
    # the bucket's copies say the new state (what recovery reads)
    manifest = json.loads(escrow.store.get_bytes(deposit_prefix(deposit_id) + "manifest.json"))
    assert manifest["generation"] == 1 and manifest["recipient"] == shown["recipient"]
    assert {f["payload"] for f in manifest["files"]} <= {
        k.removeprefix(deposit_prefix(deposit_id)) for k in new_keys}
    assert escrow.store.get_bytes(deposit_prefix(deposit_id) + "identity.wrapped") == \
        wrapped
    requested = events("version.rekey_requested")
    assert requested[0]["details"]["reason"] == "leak report 42"
    assert events("version.rekeyed")[0]["details"]["generation"] == 1
    # the depositor's view: sealed, verified; its verification is not the rekey job
    view = client.get(f"/api/v1/deposits/{deposit_id}",
                      headers={"Authorization": f"Bearer {deposited_token(escrow)}"})
    assert view.status_code in (200, 403)


def deposited_token(escrow) -> str:
    from api_deposit import depositor_token

    return depositor_token(escrow)


def test_a_rekey_that_keeps_failing_leaves_the_old_objects_serving(
    escrow, client, deposited, researcher, reviewer, events
):
    deposit_id = deposited["deposit_id"]
    with escrow.uow() as uow:
        rekey.request_rekey(escrow, uow, OPERATOR, "acme-ai/gpt-small", "2024-05", "leak")
    # the lab's SHA-256 no longer matches what the payload holds: every attempt refuses
    with escrow.uow() as uow:
        deposit = uow.session.get(Deposit, deposit_id)
        victim = next(f for f in deposit.files if f.path == "config.json")
        original, victim.sha256 = victim.sha256, "0" * 64
        uow.commit()
    for _ in range(escrow.settings.job_max_attempts):
        with escrow.uow() as uow:
            uow.session.execute(update(Job).where(Job.kind == "rekey").values(run_after=None))
            uow.commit()
        worker.run_pending(escrow)
    with escrow.uow() as uow:
        shown = rekey.show(uow, OPERATOR, "acme-ai/gpt-small", "2024-05")
        deposit = uow.session.get(Deposit, deposit_id)
        assert deposit.generation == 0 and deposit.rekeying_at is None
        victim = next(f for f in deposit.files if f.path == "config.json")
        victim.sha256 = original
        uow.commit()
    assert shown["state"] == "failed" and "SHA-256" in shown["error"], shown
    assert not [k for k in keys_of(escrow, deposit_id) if ".r1." in k]
    assert events("version.rekey_failed")[0]["details"]["rekey"] == shown["rekey_id"]
    fresh = approve(researcher, reviewer)  # the old objects serve
    assert fetch_all(client, researcher, fresh) == FILES


def test_a_file_overwritten_after_its_check_is_redone_not_switched_to(
    escrow, client, deposited, researcher, reviewer, monkeypatch
):
    """A worker that lost its job may finish writing a file after the next worker wrote and
    checked it, under another file key: the switch would serve objects nothing decrypts. The
    check before the switch finds it; the file is redone and the version serves."""
    from broker.services import rekey_run

    real = rekey_run._reencrypt_all
    stale_writes = []

    def then_a_late_writer(escrow, deposit_id, plan, cancelled):
        real(escrow, deposit_id, plan, cancelled)
        if stale_writes:
            return
        with escrow.uow() as uow:  # what the worker that lost its job writes: the same names,
            snapshot = rekey_run.copies.load_detached(uow, deposit_id)  # a fresh file key
        file = next(f for f in snapshot.files if f.path == "big.bin")
        identities = (rekey_run.deposit_identity(escrow, snapshot),
                      rekey_run.unwrap_identity(escrow, deposit_id, plan.wrapped_identity))
        stale_writes.append(rekey_run._reencrypt_file(
            escrow, snapshot, file, plan.generation, identities,
            [identities[1].to_recipient()], lambda: False))

    monkeypatch.setattr(rekey_run, "_reencrypt_all", then_a_late_writer)
    with escrow.uow() as uow:
        rekey.request_rekey(escrow, uow, OPERATOR, "acme-ai/gpt-small", "2024-05", "leak")
    worker.run_pending(escrow)  # the first attempt finds the overwrite and retries
    with escrow.uow() as uow:
        first = rekey.show(uow, OPERATOR, "acme-ai/gpt-small", "2024-05")
        uow.session.execute(update(Job).where(Job.kind == "rekey").values(run_after=None))
        uow.commit()
    assert stale_writes and first["state"] == "running" and first["files_done"] == 2, first
    worker.run_pending(escrow)
    with escrow.uow() as uow:
        shown = rekey.show(uow, OPERATOR, "acme-ai/gpt-small", "2024-05")
    assert shown["state"] == "done" and shown["generation"] == 1, shown
    fresh = approve(researcher, reviewer)
    assert fetch_all(client, researcher, fresh) == FILES


@pytest.mark.parametrize("keep", [True, False])
def test_the_labs_own_recipients_open_the_new_headers_unless_dropped(escrow, deposited, keep):
    """A lab key given at deposit opens the re-keyed headers too, unless the operator dropped
    the lab's recipients (the leak came through a lab key)."""
    lab_key = age.generate_hybrid_identity()  # as the deposit's: post-quantum
    deposit_id = deposited["deposit_id"]
    with escrow.uow() as uow:
        uow.session.get(Deposit, deposit_id).extra_recipients = json.dumps(
            [str(lab_key.to_recipient())])
        uow.commit()
    with escrow.uow() as uow:
        queued = rekey.request_rekey(escrow, uow, OPERATOR, "acme-ai/gpt-small", "2024-05",
                                     "leak", keep_lab_recipients=keep)
    assert queued["keep_lab_recipients"] is keep
    worker.run_pending(escrow)
    with escrow.uow() as uow:
        shown = rekey.show(uow, OPERATOR, "acme-ai/gpt-small", "2024-05")
        deposit = uow.session.get(Deposit, deposit_id)
        headers = [f.header for f in deposit.files]
        assert shown["state"] == "done", shown
        assert deposit.generation == 1
        assert json.loads(deposit.extra_recipients) == ([str(lab_key.to_recipient())]
                                                         if keep else [])
    for header in headers:
        if keep:
            assert len(age.unwrap_file_key(header, [lab_key])) == 16
        else:
            with pytest.raises(age.AgeError):
                age.unwrap_file_key(header, [lab_key])


def test_only_an_operator_rekeys(escrow, deposited, researcher):
    from broker.domain.principals import Principal, PrincipalKind

    person = Principal(kind=PrincipalKind.USER, id=researcher.user_id)
    with escrow.uow() as uow, pytest.raises(Forbidden):
        rekey.request_rekey(escrow, uow, person, "acme-ai/gpt-small", "2024-05", "leak")
    with escrow.uow() as uow:
        assert uow.session.scalar(select(Rekey)) is None


def test_the_cli_queues_and_shows_the_rekey(escrow, deposited, monkeypatch):
    from broker.cli import admin_rekey
    from broker.cli.admin import admin

    monkeypatch.setattr(admin_rekey, "server_escrow", lambda: escrow)  # this deployment
    runner = CliRunner()
    made = runner.invoke(admin, ["version", "rekey", TARGET, "--reason", "leak 7", "--json"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.output.strip().splitlines()[-1])["state"] == "queued"
    worker.run_pending(escrow)
    shown = runner.invoke(admin, ["version", "show", TARGET])
    assert shown.exit_code == 0, shown.output
    assert "done: the version is served under the new keys" in shown.output
    assert "leak 7" in shown.output


def test_recovery_after_a_rekey_restores_the_new_state(escrow, deposited, tmp_path, request):
    """The bucket's manifest and identity say the rekeyed deposit: a database rebuilt from the
    bucket serves the new objects, verified by decrypting them with the new identity."""
    from broker.services.recovery import recover
    from broker.services.setup import initialise

    with escrow.uow() as uow:
        rekey.request_rekey(escrow, uow, OPERATOR, "acme-ai/gpt-small", "2024-05", "leak 5")
    worker.run_pending(escrow)
    with escrow.uow() as uow:
        mirror_whole_log(escrow, uow)
        switched = uow.session.get(Deposit, deposited["deposit_id"])
        expected = (switched.generation, switched.recipient, bytes(switched.wrapped_identity),
                    sorted(bytes(f.header) for f in switched.files))
    fresh, _ = initialise(escrow.settings.with_overrides(
        database_url=f"sqlite:///{tmp_path / 'recovered.db'}"))
    try:
        result = recover(fresh)
        assert result.verified == {deposited["deposit_id"]: True}
        with fresh.uow() as uow:
            got = uow.session.get(Deposit, deposited["deposit_id"])
            assert (got.generation, got.recipient, bytes(got.wrapped_identity),
                    sorted(bytes(f.header) for f in got.files)) == expected
    finally:
        fresh.engine.dispose()
