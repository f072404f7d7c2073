"""The local store's file I/O: exact-length copies through one block of memory, atomic writes
(temp file, fsync, rename, fsync the directory), and OSError turned into StorageError/StoreFull.

Callers use these through the module (`local_io.write_all`), so a test can patch one helper
for every caller.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, BinaryIO

from broker.durable import fsync_directory
from broker.errors import BadRequest, StorageError, StoreFull

__all__ = [
    "BLOCK_SIZE",
    "copy_fd",
    "copy_stream",
    "is_file",
    "pwrite_all",
    "read_fully",
    "receive",
    "storage_errors",
    "unlink_quietly",
    "write_all",
    "write_atomically",
]

BLOCK_SIZE = 4 * 1024 * 1024  # socket/disk I/O unit (PERF-NOTES: 4 MiB reads and writes)


def receive(body: IO[bytes], fd: int, length: int, *, offset: int | None = None) -> None:
    """Copy exactly `length` bytes from `body` to `fd` (at `offset` if given, else at the file's
    position), a block at a time (constant memory)."""
    readinto = getattr(body, "readinto", None)
    buffer = bytearray(BLOCK_SIZE) if readinto is not None else None
    received = 0
    while received < length:
        want = min(BLOCK_SIZE, length - received)
        if buffer is None or readinto is None:
            # A WSGI server's own input (gunicorn): read() already returns new bytes.
            data = body.read(want)
            n = len(data)
            chunk = memoryview(data)
        else:
            chunk = memoryview(buffer)[:want]
            n = read_fully(readinto, chunk)
            chunk = chunk[:n]
        if not n:
            raise BadRequest(
                f"part body ended after {received} of {length} bytes",
                hint="re-send the part; Content-Length must match the body",
            )
        if offset is None:
            write_all(fd, chunk)
        else:
            pwrite_all(fd, chunk, offset + received)
        received += n


def copy_stream(source: BinaryIO, fd: int, size: int, key: str) -> None:
    """Copy exactly `size` bytes from `source` to `fd` through one block of memory."""
    buffer = bytearray(BLOCK_SIZE)
    copied = 0
    with memoryview(buffer) as view:
        while copied < size:
            # typeshed's BinaryIO has no readinto; every source here is a file or a store's stream
            readinto = source.readinto  # type: ignore[attr-defined]
            n = read_fully(readinto, view[: min(BLOCK_SIZE, size - copied)])
            if not n:
                raise StorageError(
                    f"local store could not put {key!r}: the source ended after {copied} of "
                    f"{size} bytes",
                    hint="the source object changed while it was copied; copy it again",
                )
            write_all(fd, view[:n])
            copied += n


def read_fully(readinto: Callable[[memoryview], int | None], view: memoryview) -> int:
    """Fill `view`; fewer bytes only at the end of the stream."""
    filled = 0
    while filled < len(view):
        n = readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled


def write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def is_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino)


def copy_fd(in_fd: int, out_fd: int, count: int) -> None:
    """Copy `count` bytes at the files' offsets, in the kernel when it can (constant memory)."""
    remaining = count
    try:
        while remaining:
            n = os.copy_file_range(in_fd, out_fd, min(remaining, 1 << 30))
            if not n:
                raise StorageError(f"a part shrank while being copied ({remaining} bytes short)")
            remaining -= n
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        if remaining != count:
            raise
    buffer = bytearray(BLOCK_SIZE)
    with memoryview(buffer) as view:
        while remaining:
            n = os.readv(in_fd, [view[: min(remaining, BLOCK_SIZE)]])
            if not n:
                raise StorageError(f"a part shrank while being copied ({remaining} bytes short)")
            write_all(out_fd, view[:n])
            remaining -= n


def write_atomically(dest: Path, write: Callable[[int], None]) -> None:
    """Write through a temp file in the same directory, fsync, rename, fsync the directory."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        try:
            write(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_directory(dest.parent)


def unlink_quietly(path: str | Path) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


@contextmanager
def storage_errors(operation: str, key: str) -> Iterator[None]:
    """Turn OSError into StorageError naming the operation and key (never a secret)."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreFull(
                f"the object store is full: local store could not {operation} {key!r}: "
                f"{e.strerror or e}",
                hint="nothing was stored; the operator must free space on the store (`escrow "
                "admin uploads gc` frees abandoned uploads) or raise its quota "
                "(ESCROW_LOCAL_STORE_QUOTA_BYTES), then run the same command again",
            ) from None
        raise StorageError(
            f"local store could not {operation} {key!r}: {e.strerror or e}"
        ) from None
