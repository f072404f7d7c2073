"""Helpers for API tests: an org with a depositor token, and a lab-side upload done by hand."""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import urllib3
from api_deposit import depositor_token

from broker import age
from broker.domain.parts import plan_parts

LOCAL_STORE_URL = "http://127.0.0.1:8080/store/"


@dataclass
class Lab:
    client: object
    token: str
    org: str = "acme-ai"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, body: dict | None = None):
        return self.client.post(path, json=body if body is not None else {}, headers=self.auth)

    def get(self, path: str):
        return self.client.get(path, headers=self.auth)

    def open(self, files: dict[str, bytes], model: str = "acme-ai/gpt-small",
             version: str = "2024-05", **extra) -> dict:
        response = self.post("/api/v1/deposits", {
            "model": model, "version": version,
            "files": [{"path": p, "size": len(d)} for p, d in files.items()], **extra})
        assert response.status_code == 200, response.json
        return response.json

    def encrypt(self, recipient: str, data: bytes) -> tuple[bytes, bytes]:
        """(header, payload) of `data` encrypted to `recipient`, as the lab's CLI would."""
        out = io.BytesIO()
        age.encrypt(io.BytesIO(data), out, [age.parse_recipient(recipient)])
        stream = io.BytesIO(out.getvalue())
        age.read_header(stream)
        header_end = stream.tell()
        return out.getvalue()[:header_end], out.getvalue()[header_end:]

    def upload(self, deposit: dict, path: str, data: bytes, *, header: bytes | None = None,
               payload: bytes | None = None, complete: bool = True):
        """Upload one file through the broker-issued URLs; returns the last response."""
        index = next(f["index"] for f in deposit["files"] if f["path"] == path)
        base = f"/api/v1/deposits/{deposit['deposit_id']}/files/{index}"
        made_header, made_payload = self.encrypt(deposit["recipient"], data)
        header = made_header if header is None else header
        payload = made_payload if payload is None else payload
        started = self.post(base + "/upload")
        assert started.status_code == 200, started.json
        response = self.client.put(base + "/header", headers=self.auth,
                                   json={"header": base64.b64encode(header).decode()})
        if response.status_code != 200:
            return response
        parts = plan_parts(len(data), started.json["part_size"])
        signed = self.post(base + "/parts", {"numbers": [p.number for p in parts]}).json["parts"]
        offset = 0
        for part, url in zip(parts, signed, strict=True):
            body = payload[offset:offset + part.cipher_size]
            offset += part.cipher_size
            if url["url"].startswith(LOCAL_STORE_URL):
                status = self.client.put(urlsplit(url["url"]).path, data=body).status_code
            else:  # a real S3 server: the bytes go there, not through the broker
                status = urllib3.request("PUT", url["url"], body=body,
                                         headers=url["headers"]).status
            assert status in (200, 201, 204), status
        if not complete:
            return started
        return self.post(base + "/complete", {"sha256": hashlib.sha256(data).hexdigest()})


@pytest.fixture
def lab(escrow, client) -> Lab:
    return Lab(client=client, token=depositor_token(escrow))


@pytest.fixture
def s3_settings(settings, moto_endpoint, monkeypatch):
    """`settings` with the object store in a bucket of a real S3 server (moto, over HTTP)."""
    bucket = f"escrow-{secrets.token_hex(4)}"
    moto_endpoint.session().client("s3", endpoint_url=moto_endpoint.url).create_bucket(
        Bucket=bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_endpoint.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_endpoint.secret_access_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", moto_endpoint.region)
    return settings.with_overrides(storage_url=f"s3://{bucket}/escrow",
                                   s3_endpoint_url=moto_endpoint.url)


@pytest.fixture
def s3_lab(s3_settings):
    from broker import create_app
    from broker.services.setup import initialise

    escrow, _ = initialise(s3_settings, migrate=False)
    app = create_app(s3_settings)
    yield escrow, Lab(client=app.test_client(), token=depositor_token(escrow))
    escrow.engine.dispose()
    app.extensions["escrow"].engine.dispose()
