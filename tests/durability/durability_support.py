"""What the durability tests share beyond fixtures (imported by name: `conftest` is ambiguous).

A lab deposits through the API as its CLI would (tests/api_deposit.py), and the worker seals.
"""

from __future__ import annotations

import json
from pathlib import Path

from api_deposit import WEIGHTS, deposit, depositor_token

__all__ = ["WEIGHTS", "depositor_token", "seal"]

MODEL = "acme-ai/gpt-small"


def seal(client, escrow, files: dict[str, bytes] | None = None,
         version: str = "2024-05", token: str | None = None) -> dict:
    """Deposit `files` (default WEIGHTS) as acme-ai/gpt-small@version and let the worker seal."""
    return deposit(client, escrow, token or depositor_token(escrow), files, MODEL, version)


def payload_key(deposit: dict, path: str = "model.safetensors") -> str:
    index = next(f["index"] for f in deposit["files"] if f["path"] == path)
    return f"deposits/{deposit['deposit_id']}/files/{index}.payload"


def flip_byte(store, key: str, offset: int = 100) -> None:
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


def audit_events(escrow, action: str) -> list[dict]:
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
