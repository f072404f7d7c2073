"""S3 against a real server (moto, over HTTP): Object Lock retention at sealing, a locked
version that cannot be deleted, a bucket without Object Lock refused with a hint, the streaming
copy a mirror uses, and a mirror in another bucket."""

from __future__ import annotations

import io
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from durability_support import audit_events, depositor_token, payload_key, seal
from sqlalchemy import update

from broker.adapters.db.models import Deposit, Job
from broker.adapters.objectstore.s3 import S3Store
from broker.config import load_settings
from broker.domain.principals import OPERATOR
from broker.errors import ConfigError, StorageError
from broker.services.fixity import run_fixity
from broker.services.worker import run_pending

PREFIX = "escrow"


def new_bucket(moto_endpoint, locked: bool) -> str:
    bucket = f"escrow-{secrets.token_hex(4)}"
    moto_endpoint.client("s3").create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=locked)
    return bucket


@pytest.fixture
def s3_env(moto_endpoint, monkeypatch):
    for name, value in moto_endpoint.env().items():
        monkeypatch.setenv(name, value)
    return moto_endpoint


@pytest.fixture
def s3_escrow(settings, s3_env):
    """s3_escrow(locked=True) -> (escrow, its app's client, bucket): an escrow on a new bucket
    of moto (with Object Lock enabled, or not) and ESCROW_OBJECT_LOCK_DAYS=1."""
    from broker import create_app
    from broker.services.setup import initialise

    made = []

    def make(locked: bool = True):
        bucket = new_bucket(s3_env, locked=locked)
        configured = settings.with_overrides(
            storage_url=f"s3://{bucket}/{PREFIX}", s3_endpoint_url=s3_env.url,
            object_lock_days=1)
        escrow, _ = initialise(configured, migrate=False)
        app = create_app(configured)
        made.extend([escrow, app.extensions["escrow"]])
        return escrow, app.test_client(), bucket

    yield make
    for escrow in made:
        escrow.engine.dispose()


def test_sealed_objects_are_locked_in_compliance_mode(s3_escrow, s3_env):
    escrow, client, bucket = s3_escrow()
    before = datetime.now(UTC)
    made = seal(client, escrow)
    raw = s3_env.client("s3")
    keys = escrow.store.list_keys(f"deposits/{made['deposit_id']}/")
    assert len(keys) == 7
    for key in keys:
        # (HEAD, not GetObjectRetention: moto 5.2 answers the latter with a 500)
        head = raw.head_object(Bucket=bucket, Key=f"{PREFIX}/{key}")
        assert head["ObjectLockMode"] == "COMPLIANCE"
        until = head["ObjectLockRetainUntilDate"]
        assert before + timedelta(days=1) - timedelta(minutes=1) <= until
        assert until <= datetime.now(UTC) + timedelta(days=1, minutes=1)


def test_a_locked_version_cannot_be_deleted(s3_escrow, s3_env):
    escrow, client, bucket = s3_escrow()
    made = seal(client, escrow)
    raw = s3_env.client("s3")
    key = f"{PREFIX}/{payload_key(made)}"
    [version] = raw.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    with pytest.raises(ClientError) as refused:
        raw.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    body = raw.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])["Body"].read()
    assert len(body) == version["Size"]


def test_a_bucket_without_object_lock_is_refused_at_sealing(s3_escrow):
    escrow, client, _bucket = s3_escrow(locked=False)
    seal(client, escrow)  # the job ran once and failed: no seal, and a retry later
    with escrow.uow() as uow:
        [deposit] = uow.session.query(Deposit).all()
        assert deposit.state == "verifying" and deposit.sealed_at is None
        [job] = [j for j in deposit.jobs if j.state != "done"]  # the last file's, which seals
        assert job.state == "queued" and "missing ObjectLockConfiguration" in job.error
        uow.session.execute(update(Job).values(attempts=4, run_after=None))  # the last attempt
        uow.commit()
    run_pending(escrow)
    with escrow.uow() as uow:
        [deposit] = uow.session.query(Deposit).all()
        assert deposit.state == "failed" and deposit.sealed_at is None
        assert "Bucket is missing ObjectLockConfiguration" in deposit.failure
        assert "Object Lock enabled" in deposit.failure_hint  # the store's own hint
        assert f"escrow verify {deposit.id}" in deposit.failure_hint
        key = f"deposits/{deposit.id}/manifest.json"
    assert audit_events(escrow, "deposit.sealed") == []
    with pytest.raises(StorageError) as raised:
        escrow.store.retain_until(key, datetime.now(UTC) + timedelta(days=1))
    assert raised.value.message.startswith(f"s3 lock {key!r}")
    assert "Object Lock enabled" in raised.value.hint
    assert "ESCROW_OBJECT_LOCK_DAYS" in raised.value.hint


def test_health_names_a_bucket_without_object_lock_before_any_deposit(s3_escrow):
    """ESCROW_OBJECT_LOCK_DAYS set, the bucket made without Object Lock: `escrow admin health`
    and /healthz say so, with what to do, instead of the first deposit failing at sealing."""
    from broker.services.health import check_all

    escrow, client, bucket = s3_escrow(locked=False)
    store = {c.name: c for c in check_all(escrow, OPERATOR)}["object store"]
    assert not store.ok
    assert f"s3 bucket {bucket!r} has no Object Lock" in store.detail
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert "has no Object Lock" in answer.json["checks"]["object_store"]["detail"]

    escrow, client, bucket = s3_escrow(locked=True)
    store = {c.name: c for c in check_all(escrow, OPERATOR)}["object store"]
    assert store.ok and store.detail.endswith("; Object Lock enabled"), store.detail
    assert client.get("/healthz").status_code == 200


def test_a_bucket_without_object_lock_says_what_to_do(s3_env):
    bucket = new_bucket(s3_env, locked=False)
    store = S3Store(bucket, PREFIX, endpoint_url=s3_env.url, session=s3_env.session())
    with pytest.raises(StorageError) as raised:
        store.check_object_lock()
    assert "create the bucket with Object Lock enabled" in raised.value.hint
    assert "ESCROW_OBJECT_LOCK_DAYS" in raised.value.hint


def test_object_lock_needs_an_s3_store():
    with pytest.raises(ConfigError, match="needs an S3 store"):
        load_settings({"ESCROW_DATA_DIR": "/tmp/x", "ESCROW_OBJECT_LOCK_DAYS": "30"})


def test_a_large_object_is_copied_in_parts_without_holding_it(s3_env):
    store = S3Store(new_bucket(s3_env, locked=False), "mirror", endpoint_url=s3_env.url,
                    session=s3_env.session())
    data = secrets.token_bytes(17 * 1024 * 1024)  # three 8 MiB parts

    class Source(io.RawIOBase):
        """A stream that remembers the largest read asked of it."""

        def __init__(self) -> None:
            self.inner, self.largest = io.BytesIO(data), 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.largest = max(self.largest, size)
            return self.inner.read(size)

    source = Source()
    store.put_stream("deposits/x/files/0.payload", source, len(data))
    assert source.largest == 8 * 1024 * 1024
    assert store.get_bytes("deposits/x/files/0.payload") == data
    assert store.head("deposits/x/files/0.payload").etag.endswith("-3")  # a multipart object


def test_a_mirror_in_another_bucket_is_filled_at_sealing_and_repaired(settings, client, s3_env):
    from broker.services.setup import initialise

    bucket = new_bucket(s3_env, locked=False)
    configured = settings.with_overrides(mirror_url=f"s3://{bucket}/copy",
                                         mirror_s3_endpoint_url=s3_env.url)
    escrow, _ = initialise(configured, migrate=False)
    try:
        made = seal(client, escrow)
        key = payload_key(made)
        assert escrow.mirror.get_bytes(key) == escrow.store.get_bytes(key)
        s3_env.client("s3").delete_object(Bucket=bucket, Key=f"copy/{key}")
        report = run_fixity(escrow, OPERATOR, limit=0)
        assert report.ok and [(r.copy, r.source) for r in report.deposits[0].repairs] == [
            ("mirror", "primary")]
        assert escrow.mirror.get_bytes(key) == escrow.store.get_bytes(key)
    finally:
        escrow.engine.dispose()


def test_a_key_rotation_locks_the_new_version_of_each_wrapped_identity(s3_escrow, s3_env):
    from broker.container import build_escrow
    from broker.services.master_key import rotate

    escrow, client, bucket = s3_escrow()
    made = seal(client, escrow)
    key = f"{PREFIX}/deposits/{made['deposit_id']}/identity.wrapped"
    raw = s3_env.client("s3")
    before = raw.head_object(Bucket=bucket, Key=key)["VersionId"]
    rotated = build_escrow(escrow.settings)
    rotate(rotated, settle_s=0)
    rotated.engine.dispose()
    head = raw.head_object(Bucket=bucket, Key=key)
    assert head["VersionId"] != before  # the re-wrapped blob is a new version ...
    assert head["ObjectLockMode"] == "COMPLIANCE"  # ... locked like the one it follows


def test_an_unlocked_mirror_bucket_is_named_by_health_and_flagged_by_fixity(s3_env, settings):
    """ESCROW_OBJECT_LOCK_DAYS set, a locked primary bucket and a mirror bucket without Object
    Lock: health names the mirror; the seal's mirror copy fails to lock; every later fixity run
    flags the mirror's unlocked objects instead of reporting all intact."""
    from broker import create_app
    from broker.services.health import probe_all
    from broker.services.setup import initialise

    primary, mirror = new_bucket(s3_env, locked=True), new_bucket(s3_env, locked=False)
    configured = settings.with_overrides(
        storage_url=f"s3://{primary}/{PREFIX}", s3_endpoint_url=s3_env.url, object_lock_days=1,
        mirror_url=f"s3://{mirror}/copy", mirror_s3_endpoint_url=s3_env.url)
    escrow, _ = initialise(configured, migrate=False)
    app = create_app(configured)
    try:
        checks = {c.name: c for c in probe_all(escrow)}
        assert checks["object store"].ok, checks["object store"].detail
        assert not checks["mirror"].ok
        assert f"s3 bucket {mirror!r} has no Object Lock" in checks["mirror"].detail
        healthz = app.test_client().get("/healthz")
        assert healthz.status_code == 503 and mirror in healthz.get_data(as_text=True)

        made = seal(app.test_client(), escrow)
        [failed] = audit_events(escrow, "deposit.mirror_failed")
        assert failed["subject"]["deposit"] == made["deposit_id"]

        for _ in range(2):
            report = run_fixity(escrow, OPERATOR, limit=0)
            assert not report.ok
            flagged = report.deposits[0].problems
            assert flagged and {f.copy for f in flagged} == {"mirror"}
            assert all("is not under Object Lock" in f.problem for f in flagged)
            assert any("Object Lock enabled" in f.problem for f in flagged)  # the store's hint
    finally:
        escrow.engine.dispose()
        app.extensions["escrow"].engine.dispose()


def test_a_seal_refused_by_object_lock_tells_the_depositor_the_store_hint(s3_escrow):
    """The deposit's failure carries the store's hint, and the client does not say the files
    did not match (they did)."""
    from broker.client.deposit_seal import deposit_failure

    escrow, client, _bucket = s3_escrow(locked=False)
    seal(client, escrow)  # the first attempt fails; then the last one
    with escrow.uow() as uow:
        uow.session.execute(update(Job).values(attempts=4, run_after=None))
        uow.commit()
    run_pending(escrow)
    with escrow.uow() as uow:
        [deposit] = uow.session.query(Deposit).all()
        assert "create the bucket with Object Lock enabled" in deposit.failure
        deposit_id = deposit.id
    token = depositor_token(escrow)
    shown = client.get(f"/api/v1/deposits/{deposit_id}",
                       headers={"Authorization": f"Bearer {token}"}).json
    told = deposit_failure(shown)
    assert "could not be sealed" in told.message and "Object Lock" in told.message
    assert "did not match" not in told.hint and f"escrow verify {deposit_id}" in told.hint
