"""Files on disk: where a manifest path goes under --out, re-reading a kept .part to resume, and
putting a verified file in place."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, BinaryIO, cast

from broker import age
from broker.age.stream import ENCRYPTED_CHUNK_SIZE
from broker.client.fetch.common import (
    CHUNK,
    NONCE,
)
from broker.domain.names import check_file_path
from broker.errors import (
    EscrowError,
    TamperDetected,
)

HASH_READ = 4 * 1024 * 1024  # reading a .part back to re-hash it


def output_path(out: Path, path: str, suffix: str = "") -> Path:
    """Where a manifest path goes under `out`; refused unless it resolves inside `out`."""
    check_file_path(path)
    root = out.resolve()
    target = (root / (path + suffix)).resolve()
    if not target.is_relative_to(root) or target == root:
        raise TamperDetected(
            f"file path {path!r} resolves outside --out ({target})",
            hint="a symbolic link under --out points elsewhere; remove it or "
            "choose an empty --out directory",
        )
    return target


def hash_prefix(handle: BinaryIO, size: int, hasher: Any) -> None:
    handle.seek(0)
    buf = bytearray(min(HASH_READ, max(size, 1)))
    view, left = memoryview(buf), size
    while left:
        n = _readinto(handle, view[: min(left, len(buf))])
        if not n:
            raise EscrowError(
                "a .part file shrank while it was being read", hint="run the same command again"
            )
        hasher.update(view[:n])
        left -= n
    handle.seek(size)


def decrypt_prefix(
    handle: BinaryIO, key: bytes, chunks: int, total_chunks: int, hasher: Any
) -> None:
    """Re-hash the plaintext of the first `chunks` chunks of an .age.part (at its nonce)."""
    nonce = handle.read(NONCE)
    decryptor = age.PayloadDecryptor(key, nonce)
    batch = 64
    cipher, plain = bytearray(batch * ENCRYPTED_CHUNK_SIZE), bytearray(batch * CHUNK)
    done = 0
    while done < chunks:
        n = min(batch, chunks - done)
        final = done + n == total_chunks
        size = n * ENCRYPTED_CHUNK_SIZE
        got = _readinto(handle, memoryview(cipher)[:size])
        view = memoryview(cipher)[:got]
        written = decryptor.decrypt_chunks(view, plain, done, final=final)
        hasher.update(memoryview(plain)[:written])
        done += n


def sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        hash_prefix(handle, path.stat().st_size, hasher)
    return hasher.hexdigest()


def umask() -> int:
    """The process umask (read once, before any thread runs: os.umask sets it to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _readinto(handle: BinaryIO, view: memoryview) -> int:
    """`readinto` of a file opened in binary mode (a buffered file: typeshed's BinaryIO omits
    the method, the object has it)."""
    return cast(io.BufferedIOBase, handle).readinto(view)
