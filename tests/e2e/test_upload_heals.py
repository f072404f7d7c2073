"""Uploads that heal (issue 14 item 2): the object store loses a file's multipart upload (an S3
lifecycle rule aborts incomplete uploads, or the store is restored from a backup) and
`escrow deposit` still seals, with the file encrypted again under a new key, without the user
doing anything.

Real parts: `escrow serve` with its objects in a real S3 server process (moto over HTTP), reached
through a TCP proxy that the test can cut; `escrow deposit` as a real subprocess; the upload
aborted behind the client's back with boto3, straight at the S3 server.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from faultproxy import TO_SERVER, FaultProxy
from live import ESCROW_BIN, BrokerProcess, start_broker

from broker import age
from broker.domain.parts import plan_parts

MIB = 1024 * 1024
SIZE = 80 * MIB  # part 1: 64 MiB, part 2: 16 MiB


@dataclass
class Wire:
    """What the proxy does with bytes going to the S3 server: count them and, once `limit` is
    passed, cut every connection; or call `then` once, before forwarding the first request
    whose request line matches `when` (in the proxy's thread, so the request waits for it)."""

    sent: int = 0
    limit: int | None = None
    when: Callable[[bytes], bool] | None = None
    then: Callable[[], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tap(self, direction: str, data: bytes) -> bool:
        if direction != TO_SERVER:
            return False
        with self.lock:
            self.sent += len(data)
            if self.when is not None and self.then is not None and self.when(
                    data.split(b"\r\n", 1)[0]):
                then, self.then, self.when = self.then, None, None
                then()
            return self.limit is not None and self.sent > self.limit

    def cut_after(self, limit: int) -> None:
        with self.lock:
            self.sent, self.limit = 0, limit

    def before(self, when: Callable[[bytes], bool], then: Callable[[], None]) -> None:
        with self.lock:
            self.when, self.then = when, then

    def disarm(self) -> None:
        with self.lock:
            self.limit, self.when, self.then = None, None, None


@dataclass
class S3Broker:
    broker: BrokerProcess
    wire: Wire
    s3: object  # a boto3 S3 client straight at the server (not through the proxy)
    bucket: str

    def deposit(self, model: Path, version: str, *more: str, **env: str
                ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [ESCROW_BIN, "deposit", str(model), "--model", "acme-ai/gpt-small", "--version",
             version, "--json", "--jobs", "1", *more],
            env={**self.broker.env, "ESCROW_CLIENT_BACKOFF_S": "0.05", **env},
            capture_output=True, text=True, timeout=300,
        )

    def uploads(self) -> list[dict]:
        return self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])

    def abort_all(self) -> int:
        uploads = self.uploads()
        for upload in uploads:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                           UploadId=upload["UploadId"])
        return len(uploads)

    def object(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=f"escrow/{key}")["Body"].read()


@pytest.fixture
def s3_broker(tmp_path: Path, moto_endpoint) -> Iterator[S3Broker]:
    bucket = f"escrow-{secrets.token_hex(4)}"
    s3 = moto_endpoint.client("s3")
    s3.create_bucket(Bucket=bucket)
    target = urlsplit(moto_endpoint.url)
    wire = Wire()
    proxy = FaultProxy((target.hostname or "127.0.0.1", target.port or 80), tap=wire.tap)
    proxy.start()
    broker = start_broker(tmp_path, {
        "ESCROW_STORAGE_URL": f"s3://{bucket}/escrow",
        "ESCROW_S3_ENDPOINT_URL": f"http://{proxy.address}",
        "AWS_ACCESS_KEY_ID": moto_endpoint.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto_endpoint.secret_access_key,
        "AWS_DEFAULT_REGION": moto_endpoint.region,
    })
    try:
        yield S3Broker(broker, wire, s3, bucket)
    finally:
        broker.stop()
        proxy.stop()


def random_model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "big.bin").write_bytes(os.urandom(SIZE))
    return model


def last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def journal_of(s3b: S3Broker) -> dict:
    journals = sorted((Path(s3b.broker.env["ESCROW_CONFIG_DIR"]) / "journal").glob("*.json"))
    assert len(journals) == 1, journals
    return json.loads(journals[0].read_text())


def check_sealed_under_a_new_key(s3b: S3Broker, deposit: dict, model: Path,
                                 identity: age.Identity, old_key: bytes) -> None:
    assert deposit["state"] == "sealed"
    prefix = f"deposits/{deposit['deposit_id']}/files/0"
    header = s3b.object(prefix + ".header")
    assert age.unwrap_file_key(header, [identity]) != old_key
    out = io.BytesIO()
    age.decrypt(io.BytesIO(header + s3b.object(prefix + ".payload")), out, [identity])
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(
        (model / "big.bin").read_bytes()).digest()


def test_an_upload_aborted_between_two_runs_is_started_over_and_seals(s3_broker: S3Broker,
                                                                      tmp_path: Path) -> None:
    model = random_model(tmp_path)
    identity = age.generate_hybrid_identity()
    recipient = str(identity.to_recipient())
    # Run 1 stops (connections cut, no retries) once part 1 is stored and part 2 is on its way.
    s3_broker.wire.cut_after(plan_parts(SIZE)[0].cipher_size + 4 * MIB)
    first = s3_broker.deposit(model, "heal-1", "--recipient", recipient,
                              ESCROW_CLIENT_RETRIES="0")
    s3_broker.wire.disarm()
    assert first.returncode == 1, first.stderr
    entry = journal_of(s3_broker)["files"]["0"]
    old_key = bytes.fromhex(entry["file_key"])
    assert "1" in entry["fingerprints"]
    # A lifecycle rule aborts the incomplete upload behind the client's and broker's backs.
    assert s3_broker.abort_all() == 1

    second = s3_broker.deposit(model, "heal-1", "--recipient", recipient)

    assert second.returncode == 0, second.stderr
    assert "no longer had its upload" in second.stderr
    assert "starting it over with a new key" in second.stderr
    deposit = last_json(second)
    assert deposit["upload"]["files_restarted"] == ["big.bin"]
    assert deposit["upload"]["parts_kept"] == 0
    check_sealed_under_a_new_key(s3_broker, deposit, model, identity, old_key)
    assert s3_broker.uploads() == []


def test_an_upload_aborted_before_completion_heals_in_the_same_run(s3_broker: S3Broker,
                                                                   tmp_path: Path) -> None:
    """Every part is stored, then the upload vanishes just before the broker completes it:
    the broker resets the file and says so, and the same run sends it again under a new key.
    (A part PUT to an aborted upload is the other way to learn it: S3 answers 404
    NoSuchUpload, which the client handles the same way; moto answers 500 there, so that
    path is tested on the local store in tests/client.)"""
    model = random_model(tmp_path)
    identity = age.generate_hybrid_identity()
    recipient = str(identity.to_recipient())
    seen: dict[str, bytes] = {}

    def abort_behind_its_back() -> None:
        seen["key"] = bytes.fromhex(journal_of(s3_broker)["files"]["0"]["file_key"])
        assert s3_broker.abort_all() == 1

    # The first request of the run that lists an upload's parts is the broker's, at completion
    # (a fresh upload is not listed when it starts).
    s3_broker.wire.before(lambda line: line.startswith(b"GET ") and b"uploadId=" in line,
                          then=abort_behind_its_back)

    result = s3_broker.deposit(model, "heal-2", "--recipient", recipient)

    assert result.returncode == 0, result.stderr
    assert "the object store no longer has the upload of 'big.bin'" in result.stderr
    deposit = last_json(result)
    assert deposit["upload"]["files_restarted"] == ["big.bin"]
    check_sealed_under_a_new_key(s3_broker, deposit, model, identity, seen["key"])
