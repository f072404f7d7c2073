"""The local store's staging area: multipart uploads in progress (layout in `local.py`).

Each function works on one upload's directory under the staging root; `LocalStore` checks the
key, turns OSError into StorageError (`local_io.storage_errors`) and passes its quota check in
as `reserve`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from broker.adapters.objectstore import local_io
from broker.adapters.objectstore.base import PendingUpload, UploadedPart
from broker.adapters.objectstore.rules import (
    MAX_PART_NUMBER,
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    check_key,
    normalise_etag,
)
from broker.durable import fsync_directory
from broker.errors import InvalidInput, ObjectMissing, StorageError

__all__ = [
    "UPLOAD_DATA",
    "check_plan",
    "check_planned_parts",
    "create_upload",
    "list_parts",
    "list_pending",
    "part_files",
    "read_upload",
    "write_part_file",
    "write_part_in_place",
]

Reserve = Callable[[int], None]  # the store's quota check: raises ENOSPC past the quota

UPLOAD_META = "upload.json"
UPLOAD_DATA = "data"
_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
_PART_RE = re.compile(r"([0-9]{1,5})\.([0-9a-f]{32})")
_ETAG_RE = re.compile(r"[0-9a-f]{32}")


def check_plan(part_sizes: Sequence[int]) -> list[int]:
    sizes = [int(size) for size in part_sizes]
    if not 1 <= len(sizes) <= MAX_PART_NUMBER or not all(
        0 <= size <= MAX_PART_SIZE for size in sizes
    ):
        raise InvalidInput(
            f"an upload plan is 1..{MAX_PART_NUMBER} parts of 0..{MAX_PART_SIZE} bytes each",
            hint="plan the parts with broker.domain.parts.plan_parts",
        )
    return sizes


def create_upload(directory: Path, meta: dict[str, object], sizes: list[int] | None) -> None:
    """Make the upload's directory, its sparse data file if planned, and its upload.json."""
    directory.mkdir(mode=0o700)
    if sizes is not None:
        # Sparse: blocks are allocated only as parts arrive.
        fd = os.open(
            directory / UPLOAD_DATA,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
            0o600,
        )
        try:
            os.ftruncate(fd, sum(sizes))
        finally:
            os.close(fd)
    raw = json.dumps(meta).encode()
    local_io.write_atomically(
        directory / UPLOAD_META, lambda fd: local_io.write_all(fd, memoryview(raw))
    )


def read_upload(staging: Path, key: str, upload_id: str) -> tuple[Path, list[int] | None]:
    """An upload's staging directory and its planned part sizes (None if unplanned)."""
    check_key(key)
    if not isinstance(upload_id, str) or not _UPLOAD_ID_RE.fullmatch(upload_id):
        raise ObjectMissing(f"no multipart upload {upload_id!r}: not an upload id")
    directory = staging / upload_id
    try:
        meta = json.loads((directory / UPLOAD_META).read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        raise ObjectMissing(
            f"no multipart upload {upload_id} for {key!r}",
            hint="it was completed or aborted, or never created; start a new upload",
        ) from None
    except (OSError, ValueError) as e:
        raise StorageError(f"multipart upload {upload_id} is unreadable: {e}") from None
    if not isinstance(meta, dict) or meta.get("key") != key:
        raise ObjectMissing(f"multipart upload {upload_id} is not an upload of {key!r}")
    sizes = meta.get("sizes")
    return directory, (None if sizes is None else [int(size) for size in sizes])


def write_part_file(
    directory: Path,
    upload_id: str,
    part_number: int,
    body: IO[bytes],
    length: int,
    reserve: Reserve,
) -> UploadedPart:
    """An unplanned part (an upload made without part sizes) as a file of its own."""
    reserve(length)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".part-{part_number}.")
    except FileNotFoundError:
        raise ObjectMissing(f"multipart upload {upload_id} ended while receiving") from None
    try:
        try:
            local_io.receive(body, fd, length)
            os.fsync(fd)
        finally:
            os.close(fd)
        etag = secrets.token_hex(16)
        name = f"{part_number}.{etag}"
        os.replace(tmp, directory / name)
    except BaseException:
        local_io.unlink_quietly(tmp)
        raise
    for other in directory.glob(f"{part_number}.*"):
        if other.name != name:
            local_io.unlink_quietly(other)  # the part was re-sent with other bytes
    fsync_directory(directory)
    return UploadedPart(number=part_number, size=length, etag=etag)


def write_part_in_place(
    directory: Path,
    key: str,
    upload_id: str,
    sizes: list[int],
    number: int,
    body: IO[bytes],
    length: int,
    reserve: Reserve,
) -> UploadedPart:
    """Write a planned part at its offset in the upload's data file.

    Its marker `<n>.<etag>` is removed before the bytes change and written after they are
    on disk, so a crash never leaves an ETag naming bytes it did not answer for. A shared
    lock on the data file keeps completion (exclusive) from renaming it mid-write; a lock
    per part serialises two senders of the same part. A part shorter than planned is kept
    (completion refuses it, as S3's does a short part); a longer one would overwrite the
    next part, so it is refused here."""
    if number > len(sizes) or length > sizes[number - 1]:
        planned = f"{sizes[number - 1]} bytes" if number <= len(sizes) else "not planned"
        raise InvalidInput(
            f"part {number} of upload {upload_id} is {length} bytes; the upload's plan "
            f"says {planned}",
            hint="send the parts the upload was planned with (`escrow deposit` does)",
        )
    offset = sum(sizes[: number - 1])
    data = directory / UPLOAD_DATA
    ended = ObjectMissing(
        f"multipart upload {upload_id} of {key!r} ended while receiving part {number}",
        hint="it was completed or aborted; start a new upload if the file is still needed",
    )
    try:
        data_fd = os.open(data, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ended from None
    try:
        fcntl.flock(data_fd, fcntl.LOCK_SH)
        if not local_io.is_file(data_fd, data):
            raise ended  # completed (renamed) while we waited for the lock
        etag = _write_locked_part(directory, data_fd, number, offset, body, length, reserve)
    finally:
        os.close(data_fd)
    return UploadedPart(number=number, size=length, etag=etag)


def _write_locked_part(
    directory: Path,
    data_fd: int,
    number: int,
    offset: int,
    body: IO[bytes],
    length: int,
    reserve: Reserve,
) -> str:
    """Under the part's own lock: drop its old marker, write the bytes, write the new marker
    (a sparse file as long as the part); the new marker's ETag."""
    lock_fd = os.open(directory / f".lock-{number}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        old = list(directory.glob(f"{number}.*"))
        # A part written whole before occupies its blocks already.
        reserve(0 if old else length)
        for marker in old:
            local_io.unlink_quietly(marker)
        if old:
            fsync_directory(directory)
        local_io.receive(body, data_fd, length, offset=offset)
        os.fdatasync(data_fd)
        etag = secrets.token_hex(16)
        marker_fd = os.open(
            directory / f"{number}.{etag}",
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
            0o600,
        )
        try:
            os.ftruncate(marker_fd, length)  # its size is the part's; no blocks
        finally:
            os.close(marker_fd)
        fsync_directory(directory)
    finally:
        os.close(lock_fd)
    return etag


def list_parts(directory: Path, sizes: list[int] | None) -> list[UploadedPart]:
    """The newest received copy of each part, by number (parts past the plan left out)."""
    newest: dict[int, tuple[int, str, UploadedPart]] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            m = _PART_RE.fullmatch(entry.name)
            if not m:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # replaced by a re-sent part while we looked
            number = int(m[1])
            if sizes is not None and number > len(sizes):
                continue
            part = UploadedPart(number=number, size=st.st_size, etag=m[2])
            rank = (st.st_mtime_ns, entry.name, part)
            if part.number not in newest or rank[:2] > newest[part.number][:2]:
                newest[part.number] = rank
    return [newest[n][2] for n in sorted(newest)]


def _received_size(directory: Path, upload_id: str, part: UploadedPart) -> tuple[Path, int]:
    """The marker or file of a listed part and its size (InvalidInput if not received)."""
    etag = normalise_etag(part.etag)
    if not _ETAG_RE.fullmatch(etag):
        raise InvalidInput(f"part {part.number} ETag {etag!r} is not one this store gave")
    source = directory / f"{part.number}.{etag}"
    try:
        return source, os.stat(source, follow_symlinks=False).st_size
    except FileNotFoundError:
        raise InvalidInput(
            f"part {part.number} with ETag {etag} was not received by upload {upload_id}",
            hint="list the upload's parts to see what arrived, and re-send the part",
        ) from None


def _check_min_size(parts: list[UploadedPart], i: int, size: int) -> None:
    if i < len(parts) - 1 and size < MIN_PART_SIZE:
        raise InvalidInput(
            f"part {parts[i].number} is {size} bytes; every part but the last needs at "
            f"least {MIN_PART_SIZE} bytes"
        )


def part_files(
    directory: Path, upload_id: str, parts: list[UploadedPart]
) -> list[tuple[Path, int]]:
    """The staged file and size of each listed part, checked against what was received."""
    sources: list[tuple[Path, int]] = []
    for i, part in enumerate(parts):
        source, size = _received_size(directory, upload_id, part)
        _check_min_size(parts, i, size)
        sources.append((source, size))
    return sources


def check_planned_parts(
    directory: Path, upload_id: str, sizes: list[int], parts: list[UploadedPart]
) -> None:
    """Refuse a completion of a planned upload unless every listed part arrived whole."""
    for i, part in enumerate(parts):
        _source, received = _received_size(directory, upload_id, part)
        if received != sizes[i]:
            raise InvalidInput(
                f"part {part.number} is {received} bytes, expected {sizes[i]} (the "
                "upload's plan)",
                hint="re-send the part whole",
            )
        _check_min_size(parts, i, sizes[i])


def list_pending(staging: Path, prefix: str) -> list[PendingUpload]:
    """Every upload of a key under `prefix` still staged, with its age and staged bytes."""
    found = []
    with os.scandir(staging) as entries:
        for entry in entries:
            if not _UPLOAD_ID_RE.fullmatch(entry.name) or not entry.is_dir():
                continue
            try:
                meta = json.loads((Path(entry.path) / UPLOAD_META).read_bytes())
                key, created = meta["key"], float(meta["created"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being created or removed right now
            if not isinstance(key, str) or not key.startswith(prefix):
                continue
            newest, size = _staged_activity(entry.path, created)
            found.append(
                PendingUpload(
                    key=key,
                    upload_id=entry.name,
                    started=datetime.fromtimestamp(created, UTC),
                    last_activity=datetime.fromtimestamp(newest, UTC),
                    size=size,
                )
            )
    return sorted(found, key=lambda u: (u.key, u.started, u.upload_id))


def _staged_activity(directory: str, created: float) -> tuple[float, int]:
    """An upload's last activity (its newest part, else its creation) and bytes allocated."""
    newest, size = created, 0
    with suppress(FileNotFoundError), os.scandir(directory) as files:
        for item in files:
            if item.name == UPLOAD_META:
                continue
            with suppress(FileNotFoundError):
                st = item.stat(follow_symlinks=False)
                size += min(st.st_size, st.st_blocks * 512)
                if _PART_RE.fullmatch(item.name):
                    newest = max(newest, st.st_mtime)
    return newest, size
