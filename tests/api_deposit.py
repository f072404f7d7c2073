"""A lab's deposit through the API, as its CLI makes one, for tests that need sealed deposits
(imported by name from any test folder, like `live`).

Encrypt each file, register its header, upload the parts to the URLs the broker hands out (the
broker's own for the local store, a real S3 server's otherwise), complete, finalise, and let the
worker verify and seal.
"""

from __future__ import annotations

import base64
import hashlib
import io
from urllib.parse import urlsplit

import urllib3

from broker import age
from broker.domain.parts import plan_parts
from broker.domain.principals import OPERATOR
from broker.services import admin
from broker.services.worker import run_pending

WEIGHTS = {"model.safetensors": b"\x00weights\x01" * 9000, "config.json": b'{"layers": 2}'}


def depositor_token(escrow, org: str = "acme-ai") -> str:
    """The organisation (created if need be) and a depositor token of it."""
    with escrow.uow() as uow:
        if admin.find_org(uow, org) is None:
            admin.create_org(uow, OPERATOR, org)
            uow.commit()
    with escrow.uow() as uow:
        return admin.create_token(uow, OPERATOR, org, "depositor", days=1).token


def deposit(client, escrow, token: str, files: dict[str, bytes] | None = None,
            model: str = "acme-ai/gpt-small", version: str = "2024-05",
            seal: bool = True) -> dict:
    """Open, upload every file, finalise, and (by default) run the worker, which seals."""
    files = files or WEIGHTS
    auth = {"Authorization": f"Bearer {token}"}
    opened = client.post("/api/v1/deposits", headers=auth, json={
        "model": model, "version": version,
        "files": [{"path": p, "size": len(d)} for p, d in files.items()]})
    assert opened.status_code == 200, opened.json
    made = opened.json
    for item in made["files"]:
        upload(client, escrow, auth, made, item["index"], files[item["path"]])
    finalized = client.post(f"/api/v1/deposits/{made['deposit_id']}/finalize", headers=auth)
    assert finalized.status_code == 202, finalized.json
    if seal:
        assert run_pending(escrow) == len(files)  # a job per file
    return made


def upload(client, escrow, auth: dict, made: dict, index: int, data: bytes) -> None:
    base = f"/api/v1/deposits/{made['deposit_id']}/files/{index}"
    out = io.BytesIO()
    age.encrypt(io.BytesIO(data), out, [age.parse_recipient(made["recipient"])])
    stream = io.BytesIO(out.getvalue())
    age.read_header(stream)
    header, payload = out.getvalue()[:stream.tell()], out.getvalue()[stream.tell():]
    started = client.post(base + "/upload", headers=auth, json={})
    assert started.status_code == 200, started.json
    put = client.put(base + "/header", headers=auth,
                     json={"header": base64.b64encode(header).decode()})
    assert put.status_code == 200, put.json
    parts = plan_parts(len(data), started.json["part_size"])
    urls = client.post(base + "/parts", headers=auth,
                       json={"numbers": [p.number for p in parts]}).json["parts"]
    offset = 0
    for part, url in zip(parts, urls, strict=True):
        body = payload[offset:offset + part.cipher_size]
        offset += part.cipher_size
        if url["url"].startswith(escrow.settings.public_url):
            assert client.put(urlsplit(url["url"]).path, data=body).status_code == 200
        else:  # a real S3 server: the bytes go there, not through the broker
            assert urllib3.request("PUT", url["url"], body=body,
                                   headers=url.get("headers") or {}).status == 200
    done = client.post(base + "/complete", headers=auth,
                       json={"sha256": hashlib.sha256(data).hexdigest()})
    assert done.status_code == 200, done.json
