"""One file of a deposit: what it is (`Item`), the journal entry its upload runs under (a new
one with a fresh key, or the last run's when it can be resumed), where its parts' bytes come
from, and why an upload must start over."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

from broker import age
from broker.client.encrypt import CipherSource, PlainSource
from broker.client.http import BrokerError, StoreError
from broker.client.journal import FileEntry

__all__ = [
    "Item",
    "b64",
    "new_entry",
    "part_source",
    "stale_reason",
    "upload_gone",
    "upload_replaced",
]


@dataclass(frozen=True)
class Item:
    """One file to deposit: a plaintext file, or an age file made by the lab."""

    path: str  # deposit path
    source: str  # file to open
    plain_size: int
    identity: tuple[int, int, int]  # (size, mtime_ns, inode) of `source` when scanned
    header: bytes | None = None  # pre-encrypted only
    payload_offset: int = 0
    sha256: str | None = None  # pre-encrypted: from --sha256sums


def upload_replaced(entry: FileEntry | None, start: dict[str, Any]) -> str:
    """Why the broker's upload of a file is not the one the journal's key was used for."""
    if start.get("upload_lost"):
        return ("the object store no longer had its upload (aborted by a lifecycle rule, or "
                "the store was restored); the broker started a new one")
    if entry is not None and entry.upload and start.get("upload") not in (None, entry.upload):
        return "the broker is on a new upload of it (the store lost the one this run used)"
    return ""


def upload_gone(error: BaseException) -> str:
    """Why `error` means that the store no longer knows the file's upload ('' if it does not):
    the broker's "upload lost" problem, or the store's 404 to a part upload."""
    if isinstance(error, BrokerError) and error.status == 409 and (
            error.title == "upload lost" or error.problem_type.endswith("upload-lost")):
        return error.message
    if isinstance(error, StoreError) and error.status_code == 404 and (
            error.code not in ("NoSuchBucket", "NoSuchKey")):
        return "the object store no longer knows its upload (it answered 404 to a part)"
    return ""


def stale_reason(entry: FileEntry | None, item: Item, recipients: list[age.Recipient]) -> str:
    """Why a journal entry cannot be resumed ('' if it can)."""
    if entry is None:
        return ""
    if entry.path != item.path or (entry.size, entry.mtime_ns, entry.inode) != item.identity:
        return "the file changed since the last run"
    if item.header is None and entry.recipients != [str(r) for r in recipients]:
        return "the recipients changed since the last run"
    if item.header is not None and entry.header != item.header:
        return "the age file changed since the last run"
    return ""


def new_entry(index: int, item: Item, recipients: list[age.Recipient],
               part_size: int) -> FileEntry:
    size, mtime_ns, inode = item.identity
    if item.header is not None:  # the lab's age chose key and nonce
        return FileEntry(index, item.path, size, mtime_ns, inode, part_size, item.header, [])
    # A fresh file key and payload nonce for every (re)start: re-encrypting plaintext that may
    # have changed under an old key and counter would reuse ChaCha20 nonces.
    file_key = age.new_file_key()
    nonce = os.urandom(age.NONCE_SIZE)
    # The escrow recipient comes first; the lab's own recipients are allowed to be classical
    # (the caller warned that this makes the deposit classical).
    header = age.new_header(file_key, recipients, allow_classical_with_pq=True)
    return FileEntry(index, item.path, size, mtime_ns, inode, part_size, header,
                     [str(r) for r in recipients], file_key, nonce)


def part_source(item: Item, entry: FileEntry) -> PlainSource | CipherSource:
    if item.header is not None:
        return CipherSource(item.source, item.path, item.payload_offset)
    assert entry.file_key is not None and entry.nonce is not None
    return PlainSource.keyed(item.source, item.path, entry.file_key, entry.nonce)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


