"""What the durability tests share beyond fixtures (imported by name: `conftest` is ambiguous).

A lab deposits through the API as its CLI would (encrypt, upload to the URLs the broker gives:
the broker's own for the local store, a real S3 server's otherwise), and the worker seals.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from urllib.parse import urlsplit

import urllib3

from broker import age
from broker.domain.parts import plan_parts
from broker.domain.principals import OPERATOR
from broker.services import admin
from broker.services.worker import run_pending

WEIGHTS = {"model.safetensors": b"\x00weights\x01" * 9000, "config.json": b'{"layers": 2}'}
MODEL = "acme-ai/gpt-small"


def depositor_token(escrow, org: str = "acme-ai") -> str:  # noqa: ANN001
    with escrow.uow() as uow:
        if admin.find_org(uow, org) is None:
            admin.create_org(uow, OPERATOR, org)
            uow.commit()
    with escrow.uow() as uow:
        return admin.create_token(uow, OPERATOR, org, "depositor", days=1).token


def seal(client, escrow, files: dict[str, bytes] | None = None,  # noqa: ANN001
         version: str = "2024-05", token: str | None = None) -> dict:
    """Deposit `files` (default WEIGHTS) as acme-ai/gpt-small@version and let the worker seal."""
    files = files or WEIGHTS
    auth = {"Authorization": f"Bearer {token or depositor_token(escrow)}"}
    opened = client.post("/api/v1/deposits", headers=auth, json={
        "model": MODEL, "version": version,
        "files": [{"path": p, "size": len(d)} for p, d in files.items()]})
    assert opened.status_code == 200, opened.json
    made = opened.json
    for item in made["files"]:
        _upload(client, escrow, auth, made, item["index"], files[item["path"]])
    finalized = client.post(f"/api/v1/deposits/{made['deposit_id']}/finalize", headers=auth)
    assert finalized.status_code == 202, finalized.json
    assert run_pending(escrow) == 1
    return made


def _upload(client, escrow, auth: dict, made: dict, index: int, data: bytes) -> None:  # noqa: ANN001
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
            assert urllib3.request("PUT", url["url"], body=body).status == 200
    done = client.post(base + "/complete", headers=auth,
                       json={"sha256": hashlib.sha256(data).hexdigest()})
    assert done.status_code == 200, done.json


def payload_key(deposit: dict, path: str = "model.safetensors") -> str:
    index = next(f["index"] for f in deposit["files"] if f["path"] == path)
    return f"deposits/{deposit['deposit_id']}/files/{index}.payload"


def flip_byte(store, key: str, offset: int = 100) -> None:  # noqa: ANN001
    """Rot one bit of a stored object in place, as a disk would (the file is rewritten)."""
    data = bytearray(store.get_bytes(key))
    data[offset] ^= 0x01
    store.put_bytes(key, bytes(data))


def rot_on_disk(root: Path, key: str, offset: int = 100) -> None:
    """Rot one bit of a local store's file without touching its size or modification time."""
    path = root / key
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))
    import os

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def audit_events(escrow, action: str) -> list[dict]:  # noqa: ANN001
    from sqlalchemy import select

    from broker.adapters.db.models import AuditEvent

    with escrow.uow() as uow:
        leaves = uow.session.scalars(
            select(AuditEvent.leaf).where(AuditEvent.action == action).order_by(AuditEvent.seq))
        return [json.loads(leaf) for leaf in leaves]


class Clock:
    """Time that moves only when the code under test sleeps (so pauses are exact)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
