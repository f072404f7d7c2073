"""The embedded object store: bucket keys are files under a directory.

The broker serves the same presigned-URL protocol S3 does (see `broker/api/store_urls.py`), so a
client has one code path: PUT a part to a signed URL and keep the ETag it answers, GET an object
from a signed URL with Range requests to resume.

Layout:
    objects_root/<key>                         an object; written by rename, never in place
    staging_root/<upload_id>/upload.json       {"key": ..., "created": ..., "sizes": [...]}
    staging_root/<upload_id>/data              planned uploads: every part at its offset
    staging_root/<upload_id>/<n>.<etag>        a received part, named by its number and ETag

Planned uploads (`create_multipart(key, part_sizes)`, what the deposit service makes) write each
part straight to its offset in one sparse `data` file, and `<n>.<etag>` is a marker written
after the part's bytes are on disk (a sparse file as long as the part: it holds no blocks).
Completion renames `data` into place, so it needs no second copy of the file (when staging and
objects share a filesystem; across filesystems it copies). An upload made without sizes keeps
one file per part, concatenated at completion.

A byte quota (`quota_bytes`, ESCROW_LOCAL_STORE_QUOTA_BYTES) makes the store refuse, as a full
disk would (ENOSPC), any write that would take the bytes allocated under both roots past it; a
full disk or quota raises `StoreFull`. The quota sums the trees on each write: it is meant for
tests and small stores; large ones should use the filesystem's own quotas.

A part's ETag is a random version id, not a hash of its bytes: hashing every part cost ~19% of
the broker's CPU on uploads (py-spy, bench/deposit.py), and nothing trusts it for integrity:
the verification worker decrypts and hashes every payload before a deposit is sealed.
Why the ETag is in the part's file name: the bytes and their ETag change in one rename, so a
completion uses exactly the bytes whose ETag the client listed, even while a part is re-sent.
An object's ETag (`head`) is an opaque validator made from its mtime and size.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO

from broker.adapters.objectstore import local_urls
from broker.adapters.objectstore.base import (
    ObjectInfo,
    PendingUpload,
    PresignedRequest,
    UploadedPart,
)
from broker.adapters.objectstore.local_urls import (
    MIN_URL_SECRET_BYTES,
    OP_GET,
    OP_PUT_PART,
    URL_PATH,
    UrlGrant,
)
from broker.adapters.objectstore.rules import (
    MAX_PART_NUMBER,
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    check_expires_in,
    check_key,
    check_part_list,
    check_part_number,
    normalise_etag,
)
from broker.durable import fsync_directory
from broker.errors import (
    BadRequest,
    ConfigError,
    InvalidInput,
    ObjectMissing,
    StorageError,
    StoreFull,
)

__all__ = ["BLOCK_SIZE", "OP_GET", "OP_PUT_PART", "URL_PATH", "LocalStore", "UrlGrant"]

BLOCK_SIZE = 4 * 1024 * 1024  # socket/disk I/O unit (PERF-NOTES: 4 MiB reads and writes)


_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
_UPLOAD_META = "upload.json"
_UPLOAD_DATA = "data"
_PART_RE = re.compile(r"([0-9]{1,5})\.([0-9a-f]{32})")
_ETAG_RE = re.compile(r"[0-9a-f]{32}")


class LocalStore:
    """An ObjectStore on a local directory, serving its own signed upload/download URLs."""

    def __init__(
        self,
        objects_root: Path,
        staging_root: Path,
        url_base: str,
        url_secret: bytes,
        *,
        clock: Callable[[], float] = time.time,
        quota_bytes: int | None = None,
    ) -> None:
        if quota_bytes is not None and quota_bytes <= 0:
            raise ConfigError(
                f"local store quota must be a positive number of bytes, got {quota_bytes}",
                hint="unset ESCROW_LOCAL_STORE_QUOTA_BYTES for no quota",
            )
        if not url_base.startswith(("http://", "https://")):
            raise ConfigError(f"store URL base must be an http(s) URL, got {url_base!r}")
        if len(url_secret) < MIN_URL_SECRET_BYTES:
            raise ConfigError(
                f"store URL secret must be at least {MIN_URL_SECRET_BYTES} bytes, "
                f"got {len(url_secret)}"
            )
        try:
            for root in (objects_root, staging_root):
                root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"local store cannot create {root}: {e.strerror}") from None
        self._root = objects_root.resolve(strict=True)
        self._staging = staging_root.resolve(strict=True)
        self._url_base = url_base.rstrip("/")
        self._url_secret = bytes(url_secret)
        self._clock = clock
        self._quota = quota_bytes

    def __repr__(self) -> str:
        return f"LocalStore({str(self._root)!r})"

    @property
    def objects_root(self) -> Path:
        return self._root

    # -- small objects -------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._object_path(key)
        with _storage_errors("put", key):
            self._reserve(len(data))
            self._make_parents(key, path)
            _write_atomically(path, lambda fd: _write_all(fd, memoryview(data)))

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as f:
            return f.read()

    def put_stream(self, key: str, source: BinaryIO, size: int) -> None:
        """Write exactly `size` bytes read from `source` as `key`, one block at a time."""
        path = self._object_path(key)
        with _storage_errors("put", key):
            self._reserve(size)
            self._make_parents(key, path)
            _write_atomically(path, lambda fd: _copy_stream(source, fd, size, key))

    def open_read(self, key: str) -> BinaryIO:
        path = self._object_path(key)
        with _storage_errors("read", key):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                raise ObjectMissing(f"object {key!r} does not exist") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise ObjectMissing(f"object {key!r} does not exist (it is a prefix)")
            return os.fdopen(fd, "rb", buffering=BLOCK_SIZE)

    def list_keys(self, prefix: str) -> list[str]:
        """Every object key under `prefix`, sorted (temp files of unfinished writes left out)."""
        start = self._root / prefix.rsplit("/", 1)[0] if "/" in prefix else self._root
        keys = []
        with _storage_errors("list", prefix):
            for directory, _dirs, names in os.walk(start):
                relative = Path(directory).relative_to(self._root).as_posix()
                for name in names:
                    key = name if relative == "." else f"{relative}/{name}"
                    if not name.startswith(".") and key.startswith(prefix):
                        keys.append(key)
        return sorted(keys)

    def head(self, key: str) -> ObjectInfo | None:
        path = self._object_path(key)
        with _storage_errors("head", key):
            try:
                st = os.stat(path, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key=key, size=st.st_size, etag=f"{st.st_mtime_ns:x}-{st.st_size:x}")

    def delete(self, key: str) -> None:
        path = self._object_path(key)
        with _storage_errors("delete", key):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return  # deleting what is not there is not an error, as in S3

    # -- multipart -----------------------------------------------------------------------------

    def create_multipart(self, key: str, part_sizes: Sequence[int] | None = None) -> str:
        """A new upload of `key`. With `part_sizes` (every part's size, in order: the upload's
        plan), parts are written in place in one file and completion needs no second copy."""
        self._object_path(key)
        sizes = None if part_sizes is None else _check_plan(part_sizes)
        upload_id = secrets.token_hex(16)  # random: an id must not be guessable or reused
        directory = self._staging / upload_id
        meta: dict[str, object] = {"key": key, "created": int(self._clock())}
        if sizes is not None:
            meta["sizes"] = sizes
        with _storage_errors("create upload for", key):
            directory.mkdir(mode=0o700)
            if sizes is not None:
                # Sparse: blocks are allocated only as parts arrive.
                fd = os.open(
                    directory / _UPLOAD_DATA,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                    0o600,
                )
                try:
                    os.ftruncate(fd, sum(sizes))
                finally:
                    os.close(fd)
            raw = json.dumps(meta).encode()
            _write_atomically(directory / _UPLOAD_META, lambda fd: _write_all(fd, memoryview(raw)))
        return upload_id

    def presign_upload_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        expires_in: int,
        size: int = MAX_PART_SIZE,
    ) -> PresignedRequest:
        """A signed PUT for one part of at most `size` bytes: the URL server refuses a longer
        body (413) before reading it."""
        check_part_number(part_number)
        if not 0 <= size <= MAX_PART_SIZE:
            raise InvalidInput(f"a part is 0..{MAX_PART_SIZE} bytes, not {size}")
        self._upload_dir(key, upload_id)
        return self._presign(OP_PUT_PART, key, upload_id, part_number, expires_in, size)

    def write_part(
        self, key: str, upload_id: str, part_number: int, body: IO[bytes], length: int
    ) -> UploadedPart:
        """Receive exactly `length` bytes from `body` as part `part_number`, replacing any
        earlier copy of that part. Memory stays at one block."""
        check_part_number(part_number)
        if not 0 <= length <= MAX_PART_SIZE:
            raise InvalidInput(f"a part is 0..{MAX_PART_SIZE} bytes, this one is {length}")
        directory, sizes = self._upload(key, upload_id)
        try:
            if sizes is not None:
                return self._write_part_in_place(
                    key, upload_id, directory, sizes, part_number, body, length
                )
            return self._write_part_file(key, upload_id, directory, part_number, body, length)
        except StorageError:
            if directory.exists():
                raise
            raise ObjectMissing(  # aborted or completed while the part was arriving
                f"multipart upload {upload_id} of {key!r} ended while receiving part "
                f"{part_number}",
                hint="it was completed or aborted; start a new upload if the file is still needed",
            ) from None

    def _write_part_file(
        self,
        key: str,
        upload_id: str,
        directory: Path,
        part_number: int,
        body: IO[bytes],
        length: int,
    ) -> UploadedPart:
        """An unplanned part (an upload made without part sizes) as a file of its own."""
        with _storage_errors(f"write part {part_number} of", key):
            self._reserve(length)
            try:
                fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".part-{part_number}.")
            except FileNotFoundError:
                raise ObjectMissing(f"multipart upload {upload_id} ended while receiving") from None
            try:
                try:
                    _receive(body, fd, length)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                etag = secrets.token_hex(16)
                name = f"{part_number}.{etag}"
                os.replace(tmp, directory / name)
            except BaseException:
                _unlink_quietly(tmp)
                raise
            for other in directory.glob(f"{part_number}.*"):
                if other.name != name:
                    _unlink_quietly(other)  # the part was re-sent with other bytes
            fsync_directory(directory)
        return UploadedPart(number=part_number, size=length, etag=etag)

    def _write_part_in_place(
        self,
        key: str,
        upload_id: str,
        directory: Path,
        sizes: list[int],
        number: int,
        body: IO[bytes],
        length: int,
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
        data = directory / _UPLOAD_DATA
        ended = ObjectMissing(
            f"multipart upload {upload_id} of {key!r} ended while receiving part {number}",
            hint="it was completed or aborted; start a new upload if the file is still needed",
        )
        with _storage_errors(f"write part {number} of", key):
            try:
                data_fd = os.open(data, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                raise ended from None
            try:
                fcntl.flock(data_fd, fcntl.LOCK_SH)
                if not _is_file(data_fd, data):
                    raise ended  # completed (renamed) while we waited for the lock
                lock_fd = os.open(
                    directory / f".lock-{number}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX)
                    old = list(directory.glob(f"{number}.*"))
                    # A part written whole before occupies its blocks already.
                    self._reserve(0 if old else length)
                    for marker in old:
                        _unlink_quietly(marker)
                    if old:
                        fsync_directory(directory)
                    _receive(body, data_fd, length, offset=offset)
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
            finally:
                os.close(data_fd)
        return UploadedPart(number=number, size=length, etag=etag)

    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        directory, sizes = self._upload(key, upload_id)
        newest: dict[int, tuple[int, str, UploadedPart]] = {}
        with _storage_errors("list parts of", key), os.scandir(directory) as entries:
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

    def complete_multipart(self, key: str, upload_id: str, parts: list[UploadedPart]) -> None:
        """Assemble the listed parts, in order, as `key`: readers see the old object or the whole
        new one, never a half. A planned upload's data file is renamed into place (no copy);
        otherwise the parts are concatenated into a temp file beside the object and renamed."""
        path = self._object_path(key)
        directory, sizes = self._upload(key, upload_id)
        check_part_list([p.number for p in parts])
        if sizes is not None:
            self._complete_in_place(key, upload_id, path, directory, sizes, parts)
            return
        with _storage_errors(f"complete upload {upload_id} of", key):
            sources = self._part_files(directory, upload_id, parts)

        def concatenate(out_fd: int) -> None:
            for source, size in sources:
                in_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    _copy_fd(in_fd, out_fd, size)
                finally:
                    os.close(in_fd)

        with _storage_errors(f"complete upload {upload_id} of", key):
            self._reserve(sum(size for _source, size in sources))
            self._make_parents(key, path)
            _write_atomically(path, concatenate)
            shutil.rmtree(directory, ignore_errors=True)

    def _complete_in_place(
        self,
        key: str,
        upload_id: str,
        path: Path,
        directory: Path,
        sizes: list[int],
        parts: list[UploadedPart],
    ) -> None:
        if [p.number for p in parts] != list(range(1, len(sizes) + 1)):
            raise InvalidInput(
                f"upload {upload_id} was planned as {len(sizes)} parts; complete it with parts "
                f"1 to {len(sizes)}, got {[p.number for p in parts]}",
                hint="list the upload's parts to see what arrived, and re-send the missing ones",
            )
        data = directory / _UPLOAD_DATA
        where = f"complete upload {upload_id} of"
        with _storage_errors(where, key):
            try:
                data_fd = os.open(data, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                # A completion that renamed the data and died before removing the upload: the
                # object is whole (the rename was atomic); finish the clean-up.
                found = self.head(key)
                if found is None or found.size != sum(sizes):
                    raise ObjectMissing(
                        f"multipart upload {upload_id} of {key!r} has no data",
                        hint="start a new upload",
                    ) from None
                shutil.rmtree(directory, ignore_errors=True)
                return
            try:
                fcntl.flock(data_fd, fcntl.LOCK_EX)  # no part is being written from here on
                for i, part in enumerate(parts):
                    etag = normalise_etag(part.etag)
                    if not _ETAG_RE.fullmatch(etag):
                        raise InvalidInput(
                            f"part {part.number} ETag {etag!r} is not one this store gave"
                        )
                    try:
                        received = os.stat(directory / f"{part.number}.{etag}").st_size
                    except FileNotFoundError:
                        raise InvalidInput(
                            f"part {part.number} with ETag {etag} was not received by upload "
                            f"{upload_id}",
                            hint="list the upload's parts to see what arrived, and re-send the "
                            "part",
                        ) from None
                    if received != sizes[i]:
                        raise InvalidInput(
                            f"part {part.number} is {received} bytes, expected {sizes[i]} (the "
                            "upload's plan)",
                            hint="re-send the part whole",
                        )
                    if i < len(parts) - 1 and sizes[i] < MIN_PART_SIZE:
                        raise InvalidInput(
                            f"part {part.number} is {sizes[i]} bytes; every part but the last "
                            f"needs at least {MIN_PART_SIZE} bytes"
                        )
                os.fsync(data_fd)
                self._make_parents(key, path)
                try:
                    os.rename(data, path)
                except OSError as e:
                    if e.errno != errno.EXDEV:
                        raise
                    # Staging on another filesystem: one copy there, then rename.
                    self._reserve(sum(sizes))
                    _write_atomically(path, lambda out_fd: _copy_fd(data_fd, out_fd, sum(sizes)))
                    _unlink_quietly(data)
                fsync_directory(path.parent)
            finally:
                os.close(data_fd)
            shutil.rmtree(directory, ignore_errors=True)

    def _part_files(
        self, directory: Path, upload_id: str, parts: list[UploadedPart]
    ) -> list[tuple[Path, int]]:
        """The staged file and size of each listed part, checked against what was received."""
        sources: list[tuple[Path, int]] = []
        for i, part in enumerate(parts):
            etag = normalise_etag(part.etag)
            if not _ETAG_RE.fullmatch(etag):
                raise InvalidInput(f"part {part.number} ETag {etag!r} is not one this store gave")
            source = directory / f"{part.number}.{etag}"
            try:
                size = os.stat(source, follow_symlinks=False).st_size
            except FileNotFoundError:
                raise InvalidInput(
                    f"part {part.number} with ETag {etag} was not received by upload {upload_id}",
                    hint="list the upload's parts to see what arrived, and re-send the part",
                ) from None
            if i < len(parts) - 1 and size < MIN_PART_SIZE:
                raise InvalidInput(
                    f"part {part.number} is {size} bytes; every part but the last needs at "
                    f"least {MIN_PART_SIZE} bytes"
                )
            sources.append((source, size))
        return sources

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard an upload's parts; an unknown or finished upload is not an error."""
        try:
            directory = self._upload_dir(key, upload_id)
        except ObjectMissing:
            return
        with _storage_errors(f"abort upload {upload_id} of", key):
            shutil.rmtree(directory, ignore_errors=True)

    def list_multipart_uploads(self, prefix: str) -> list[PendingUpload]:
        """Every upload of a key under `prefix` still staged, with its age and staged bytes."""
        found = []
        with _storage_errors("list uploads under", prefix), os.scandir(self._staging) as entries:
            for entry in entries:
                if not _UPLOAD_ID_RE.fullmatch(entry.name) or not entry.is_dir():
                    continue
                try:
                    meta = json.loads((Path(entry.path) / _UPLOAD_META).read_bytes())
                    key, created = meta["key"], float(meta["created"])
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # being created or removed right now
                if not isinstance(key, str) or not key.startswith(prefix):
                    continue
                newest, size = created, 0
                with suppress(FileNotFoundError), os.scandir(entry.path) as files:
                    for item in files:
                        if item.name == _UPLOAD_META:
                            continue
                        with suppress(FileNotFoundError):
                            st = item.stat(follow_symlinks=False)
                            size += min(st.st_size, st.st_blocks * 512)
                            if _PART_RE.fullmatch(item.name):
                                newest = max(newest, st.st_mtime)
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

    # -- downloads -----------------------------------------------------------------------------

    def presign_get(self, key: str, expires_in: int) -> PresignedRequest:
        # The key's form only: the URL server resolves the file (symlinks refused) when served.
        check_key(key)
        return self._presign(OP_GET, key, "", 0, expires_in, 0)

    def object_file(self, key: str) -> Path:
        """The file holding `key`, for the URL server to stream (ObjectMissing if absent)."""
        path = self._object_path(key)
        if self.head(key) is None:
            raise ObjectMissing(f"object {key!r} does not exist")
        return path

    def verify_url(self, token: str, operation: str) -> UrlGrant:
        """Check a store URL token's signature, then its operation and expiry (Forbidden)."""
        return local_urls.verify(self._url_secret, token, operation, self._clock())

    def check(self) -> str:
        if not os.access(self._root, os.W_OK) or not os.access(self._staging, os.W_OK):
            raise StorageError(f"local store {self._root} or {self._staging} is not writable")
        fs = os.statvfs(self._root)
        free_gib = fs.f_bavail * fs.f_frsize / 2**30
        quota = "" if self._quota is None else f"; {self.usage()} of {self._quota} quota bytes used"
        return f"local store {self._root} ({free_gib:.1f} GiB free{quota})"

    # -- internals -----------------------------------------------------------------------------

    def _object_path(self, key: str) -> Path:
        """The file for `key`, refusing any key that would leave the objects root."""
        check_key(key)
        path = self._root.joinpath(*key.split("/"))
        real = Path(os.path.realpath(path))
        if real != path:
            where = "outside the store root" if not real.is_relative_to(self._root) else real
            raise InvalidInput(
                f"object key {key!r} resolves through a symlink to {where}; refused",
                hint=f"the store root {self._root} must hold no symlinks",
            )
        return path

    def _make_parents(self, key: str, path: Path) -> None:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StorageError(
                f"cannot store {key!r}: one of its prefixes is an object, not a prefix"
            ) from None
        self._object_path(key)  # a symlink may not have appeared in between

    def _upload_dir(self, key: str, upload_id: str) -> Path:
        return self._upload(key, upload_id)[0]

    def _upload(self, key: str, upload_id: str) -> tuple[Path, list[int] | None]:
        """An upload's staging directory and its planned part sizes (None if unplanned)."""
        check_key(key)
        if not isinstance(upload_id, str) or not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise ObjectMissing(f"no multipart upload {upload_id!r}: not an upload id")
        directory = self._staging / upload_id
        try:
            meta = json.loads((directory / _UPLOAD_META).read_bytes())
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

    def usage(self) -> int:
        """Bytes allocated under the objects and staging roots (a sparse file counts only what
        it holds): what the quota limits."""
        used = 0
        for root in (self._root, self._staging):
            for directory, _dirs, names in os.walk(root):
                for name in names:
                    with suppress(FileNotFoundError):
                        st = os.stat(os.path.join(directory, name), follow_symlinks=False)
                        used += min(st.st_size, st.st_blocks * 512)
        return used

    def _reserve(self, size: int) -> None:
        """Refuse, as a full disk would (ENOSPC), a write that would pass the quota."""
        if self._quota is None or size <= 0:
            return
        used = self.usage()
        if used + size > self._quota:
            raise OSError(
                errno.ENOSPC,
                f"its quota of {self._quota} bytes is reached ({used} bytes used, {size} more "
                "needed)",
            )

    def _presign(
        self,
        operation: str,
        key: str,
        upload_id: str,
        part_number: int,
        expires_in: int,
        max_size: int,
    ) -> PresignedRequest:
        check_expires_in(expires_in)
        expires_at = int(self._clock()) + expires_in
        return local_urls.sign(
            self._url_secret, self._url_base, operation, key, upload_id, part_number, expires_at,
            max_size,
        )



def _receive(body: IO[bytes], fd: int, length: int, *, offset: int | None = None) -> None:
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
            n = _read_fully(readinto, chunk)
            chunk = chunk[:n]
        if not n:
            raise BadRequest(
                f"part body ended after {received} of {length} bytes",
                hint="re-send the part; Content-Length must match the body",
            )
        if offset is None:
            _write_all(fd, chunk)
        else:
            _pwrite_all(fd, chunk, offset + received)
        received += n


def _copy_stream(source: BinaryIO, fd: int, size: int, key: str) -> None:
    """Copy exactly `size` bytes from `source` to `fd` through one block of memory."""
    buffer = bytearray(BLOCK_SIZE)
    copied = 0
    with memoryview(buffer) as view:
        while copied < size:
            # typeshed's BinaryIO has no readinto; every source here is a file or a store's stream
            readinto = source.readinto  # type: ignore[attr-defined]
            n = _read_fully(readinto, view[: min(BLOCK_SIZE, size - copied)])
            if not n:
                raise StorageError(
                    f"local store could not put {key!r}: the source ended after {copied} of "
                    f"{size} bytes",
                    hint="the source object changed while it was copied; copy it again",
                )
            _write_all(fd, view[:n])
            copied += n


def _read_fully(readinto: Callable[[memoryview], int | None], view: memoryview) -> int:
    """Fill `view`; fewer bytes only at the end of the stream."""
    filled = 0
    while filled < len(view):
        n = readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _is_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino)


def _check_plan(part_sizes: Sequence[int]) -> list[int]:
    sizes = [int(size) for size in part_sizes]
    if not 1 <= len(sizes) <= MAX_PART_NUMBER or not all(
        0 <= size <= MAX_PART_SIZE for size in sizes
    ):
        raise InvalidInput(
            f"an upload plan is 1..{MAX_PART_NUMBER} parts of 0..{MAX_PART_SIZE} bytes each",
            hint="plan the parts with broker.domain.parts.plan_parts",
        )
    return sizes


def _copy_fd(in_fd: int, out_fd: int, count: int) -> None:
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
            _write_all(out_fd, view[:n])
            remaining -= n


def _write_atomically(dest: Path, write: Callable[[int], None]) -> None:
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
        _unlink_quietly(tmp)
        raise
    fsync_directory(dest.parent)


def _unlink_quietly(path: str | Path) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


@contextmanager
def _storage_errors(operation: str, key: str) -> Iterator[None]:
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
