"""A deposit into an S3-compatible server without ListParts (s3rver 3.7 answers it 405
MethodNotAllowed): the client reports the parts it uploaded at completion and the broker
completes with them, so the deposit seals; a resumed upload re-sends its parts."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from live import start_broker

from broker.adapters.objectstore.s3 import S3Store
from broker.errors import NotSupported


@pytest.fixture
def broker_on_s3rver(tmp_path: Path, s3rver_endpoint):
    bucket = f"escrow-{secrets.token_hex(4)}"
    s3rver_endpoint.session().client("s3", endpoint_url=s3rver_endpoint.url).create_bucket(
        Bucket=bucket)
    broker = start_broker(tmp_path, {
        "ESCROW_STORAGE_URL": f"s3://{bucket}/escrow",
        "ESCROW_S3_ENDPOINT_URL": s3rver_endpoint.url,
        "AWS_ACCESS_KEY_ID": s3rver_endpoint.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3rver_endpoint.secret_access_key,
        "AWS_DEFAULT_REGION": s3rver_endpoint.region,
    })
    yield broker, bucket
    broker.stop()


def test_s3rver_has_no_list_parts_and_the_store_says_so(s3rver_endpoint):
    """The premise of this file: if s3rver learns ListParts, these tests prove nothing new."""
    bucket = f"escrow-{secrets.token_hex(4)}"
    s3rver_endpoint.session().client("s3", endpoint_url=s3rver_endpoint.url).create_bucket(
        Bucket=bucket)
    store = S3Store(bucket, endpoint_url=s3rver_endpoint.url,
                    session=s3rver_endpoint.session())
    upload = store.create_multipart("k")
    with pytest.raises(NotSupported) as raised:
        store.list_parts("k", upload)
    assert "does not support this operation" in raised.value.message
    assert "S3 compatibility" in raised.value.hint


def test_a_deposit_into_a_store_without_list_parts_seals_and_verifies(broker_on_s3rver,
                                                                      tmp_path):
    broker, _bucket = broker_on_s3rver
    model = tmp_path / "gpt-small"
    (model / "weights").mkdir(parents=True)
    (model / "config.json").write_text('{"layers": 2}')
    (model / "weights" / "model.safetensors").write_bytes(os.urandom(300_000))
    (model / "empty.txt").write_bytes(b"")
    result = broker.escrow("deposit", str(model), "--model", "acme-ai/gpt-small",
                           "--version", "1", "--json")
    deposit = broker.last_json(result)
    assert deposit["state"] == "sealed"
    assert {f["path"] for f in deposit["files"]} == {
        "config.json", "weights/model.safetensors", "empty.txt"}
    verified = broker.escrow("verify", deposit["deposit_id"], "--json")
    assert broker.last_json(verified)["ok"] is True
