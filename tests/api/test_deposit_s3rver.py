"""Completing uploads on an S3-compatible server without ListParts (s3rver 3.7): the broker
uses the parts the client reports (number, size, the ETag each PUT answered), and a resumed
upload lists no parts (the client sends them again)."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets

import pytest
import urllib3
from api_deposit import depositor_token

from broker.domain.parts import plan_parts
from broker.services.worker import run_pending


@pytest.fixture
def s3rver_lab(settings, s3rver_endpoint, monkeypatch):
    from api.conftest import Lab

    from broker import create_app
    from broker.services.setup import initialise

    bucket = f"escrow-{secrets.token_hex(4)}"
    s3rver_endpoint.session().client("s3", endpoint_url=s3rver_endpoint.url).create_bucket(
        Bucket=bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3rver_endpoint.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3rver_endpoint.secret_access_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3rver_endpoint.region)
    s3_settings = settings.with_overrides(storage_url=f"s3://{bucket}/escrow",
                                          s3_endpoint_url=s3rver_endpoint.url)
    escrow, _ = initialise(s3_settings, migrate=False)
    app = create_app(s3_settings)
    yield escrow, Lab(client=app.test_client(), token=depositor_token(escrow))
    escrow.engine.dispose()
    app.extensions["escrow"].engine.dispose()


def send_parts(lab, deposit: dict, data: bytes) -> tuple[str, list[dict]]:
    """Start the upload, register the header and PUT every part to s3rver: (the file's
    /files/N base path, the parts as the client reports them)."""
    base = f"/api/v1/deposits/{deposit['deposit_id']}/files/0"
    header, payload = lab.encrypt(deposit["recipient"], data)
    started = lab.post(base + "/upload")
    assert started.status_code == 200, started.json
    put = lab.client.put(base + "/header", headers=lab.auth,
                         json={"header": base64.b64encode(header).decode()})
    assert put.status_code == 200, put.json
    parts = plan_parts(len(data), started.json["part_size"])
    signed = lab.post(base + "/parts", {"numbers": [p.number for p in parts]}).json["parts"]
    reported, offset = [], 0
    for part, url in zip(parts, signed, strict=True):
        body = payload[offset:offset + part.cipher_size]
        offset += part.cipher_size
        response = urllib3.request("PUT", url["url"], body=body, headers=url["headers"])
        assert response.status == 200
        reported.append({"number": part.number, "size": part.cipher_size,
                         "etag": response.headers["ETag"].strip('"')})
    return base, reported


def test_completion_uses_the_reported_parts_where_the_store_cannot_list_them(s3rver_lab):
    escrow, lab = s3rver_lab
    data = os.urandom(100_000)
    deposit = lab.open({"model.safetensors": data})
    base, reported = send_parts(lab, deposit, data)
    digest = hashlib.sha256(data).hexdigest()

    # A resumed start cannot list what arrived: no part is known, nothing fails.
    resumed = lab.post(base + "/upload")
    assert resumed.status_code == 200, resumed.json
    assert resumed.json["state"] == "uploading" and resumed.json["parts"] == []

    # An older client that reports nothing is told why and what to do.
    unreported = lab.post(base + "/complete", {"sha256": digest})
    assert unreported.status_code == 501, unreported.json
    assert "did not report the parts it uploaded" in unreported.json["detail"]
    assert "update the escrow client" in unreported.json["hint"]

    # A part missing from the report is named (s3rver does not check ETags at completion, as
    # S3 does; whatever it assembles, the verification decrypts every byte before sealing).
    short = lab.post(base + "/complete", {"sha256": digest, "parts": [
        {**reported[0], "number": 2}]})
    assert short.status_code == 422, short.json
    assert "part 1 is missing" in short.json["detail"]

    done = lab.post(base + "/complete", {"sha256": digest, "parts": reported})
    assert done.status_code == 200, done.json
    assert lab.post(f"/api/v1/deposits/{deposit['deposit_id']}/finalize").status_code == 202
    run_pending(escrow)
    assert lab.get(f"/api/v1/deposits/{deposit['deposit_id']}").json["state"] == "sealed"


@pytest.mark.parametrize("parts", [
    "all of them",
    [{"number": 1, "size": 10}],
    [{"number": "1", "size": 10, "etag": "abc"}],
    [{"number": 1, "size": True, "etag": "abc"}],
    [{"number": 1, "size": 10, "etag": ""}],
    [{"number": 1, "size": 10, "etag": "a\nb"}],
    [{"number": 1, "size": 10, "etag": "a"}, {"number": 1, "size": 10, "etag": "b"}],
])
def test_malformed_reported_parts_are_refused_with_the_expected_shape(s3rver_lab, parts):
    _escrow, lab = s3rver_lab
    data = b"weights"
    deposit = lab.open({"model.safetensors": data})
    base, _reported = send_parts(lab, deposit, data)
    refused = lab.post(base + "/complete",
                       {"sha256": hashlib.sha256(data).hexdigest(), "parts": parts})
    assert refused.status_code == 422, refused.json
    assert "parts" in refused.json["detail"] and "number" in refused.json["hint"]


def test_a_restart_works_where_the_store_cannot_abort_the_old_upload(s3rver_lab):
    """s3rver has no AbortMultipartUpload: a file that changed still starts over on a new
    upload (the old one's parts stay in the store), and that upload completes."""
    _escrow, lab = s3rver_lab
    data = b"weights, first version"
    deposit = lab.open({"model.safetensors": data})
    base, _reported = send_parts(lab, deposit, data)
    first = lab.post(base + "/upload").json["upload"]
    restarted = lab.post(base + "/upload", {"restart": True})
    assert restarted.status_code == 200, restarted.json
    assert restarted.json["upload"] not in (None, first)
    assert restarted.json["header_registered"] is False
    base, reported = send_parts(lab, deposit, data)
    done = lab.post(base + "/complete",
                    {"sha256": hashlib.sha256(data).hexdigest(), "parts": reported})
    assert done.status_code == 200, done.json
