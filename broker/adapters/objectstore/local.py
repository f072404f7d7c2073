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
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO, BinaryIO

from broker.adapters.objectstore import local_io, local_urls
from broker.adapters.objectstore import local_staging as staging
from broker.adapters.objectstore.base import (
    ObjectInfo,
    PendingUpload,
    PresignedRequest,
    UploadedPart,
)
from broker.adapters.objectstore.local_io import BLOCK_SIZE
from broker.adapters.objectstore.local_urls import (
    MIN_URL_SECRET_BYTES,
    OP_GET,
    OP_PUT_PART,
    URL_PATH,
    UrlGrant,
)
from broker.adapters.objectstore.rules import (
    MAX_PART_SIZE,
    check_expires_in,
    check_key,
    check_part_list,
    check_part_number,
)
from broker.durable import fsync_directory
from broker.errors import (
    ConfigError,
    InvalidInput,
    ObjectMissing,
    StorageError,
)

__all__ = ["BLOCK_SIZE", "OP_GET", "OP_PUT_PART", "URL_PATH", "LocalStore", "UrlGrant"]


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
        with local_io.storage_errors("put", key):
            self._reserve(len(data))
            self._make_parents(key, path)
            local_io.write_atomically(path, lambda fd: local_io.write_all(fd, memoryview(data)))

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as f:
            return f.read()

    def put_stream(self, key: str, source: BinaryIO, size: int) -> None:
        """Write exactly `size` bytes read from `source` as `key`, one block at a time."""
        path = self._object_path(key)
        with local_io.storage_errors("put", key):
            self._reserve(size)
            self._make_parents(key, path)
            local_io.write_atomically(path, lambda fd: local_io.copy_stream(source, fd, size, key))

    def open_read(self, key: str) -> BinaryIO:
        path = self._object_path(key)
        with local_io.storage_errors("read", key):
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
        with local_io.storage_errors("list", prefix):
            for directory, _dirs, names in os.walk(start):
                relative = Path(directory).relative_to(self._root).as_posix()
                for name in names:
                    key = name if relative == "." else f"{relative}/{name}"
                    if not name.startswith(".") and key.startswith(prefix):
                        keys.append(key)
        return sorted(keys)

    def head(self, key: str) -> ObjectInfo | None:
        path = self._object_path(key)
        with local_io.storage_errors("head", key):
            try:
                st = os.stat(path, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key=key, size=st.st_size, etag=f"{st.st_mtime_ns:x}-{st.st_size:x}")

    def delete(self, key: str) -> None:
        path = self._object_path(key)
        with local_io.storage_errors("delete", key):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return  # deleting what is not there is not an error, as in S3

    # -- multipart -----------------------------------------------------------------------------

    def create_multipart(self, key: str, part_sizes: Sequence[int] | None = None) -> str:
        """A new upload of `key`. With `part_sizes` (every part's size, in order: the upload's
        plan), parts are written in place in one file and completion needs no second copy."""
        self._object_path(key)
        sizes = None if part_sizes is None else staging.check_plan(part_sizes)
        upload_id = secrets.token_hex(16)  # random: an id must not be guessable or reused
        meta: dict[str, object] = {"key": key, "created": int(self._clock())}
        if sizes is not None:
            meta["sizes"] = sizes
        with local_io.storage_errors("create upload for", key):
            staging.create_upload(self._staging / upload_id, meta, sizes)
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
            with local_io.storage_errors(f"write part {part_number} of", key):
                if sizes is not None:
                    return staging.write_part_in_place(
                        directory, key, upload_id, sizes, part_number, body, length, self._reserve
                    )
                return staging.write_part_file(
                    directory, upload_id, part_number, body, length, self._reserve
                )
        except StorageError:
            if directory.exists():
                raise
            raise ObjectMissing(  # aborted or completed while the part was arriving
                f"multipart upload {upload_id} of {key!r} ended while receiving part "
                f"{part_number}",
                hint="it was completed or aborted; start a new upload if the file is still needed",
            ) from None

    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        directory, sizes = self._upload(key, upload_id)
        with local_io.storage_errors("list parts of", key):
            return staging.list_parts(directory, sizes)

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
        with local_io.storage_errors(f"complete upload {upload_id} of", key):
            sources = staging.part_files(directory, upload_id, parts)

        def concatenate(out_fd: int) -> None:
            for source, size in sources:
                in_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    local_io.copy_fd(in_fd, out_fd, size)
                finally:
                    os.close(in_fd)

        with local_io.storage_errors(f"complete upload {upload_id} of", key):
            self._reserve(sum(size for _source, size in sources))
            self._make_parents(key, path)
            local_io.write_atomically(path, concatenate)
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
        data = directory / staging.UPLOAD_DATA
        with local_io.storage_errors(f"complete upload {upload_id} of", key):
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
                staging.check_planned_parts(directory, upload_id, sizes, parts)
                os.fsync(data_fd)
                self._make_parents(key, path)
                self._move_data(data, data_fd, path, sum(sizes))
            finally:
                os.close(data_fd)
            shutil.rmtree(directory, ignore_errors=True)

    def _move_data(self, data: Path, data_fd: int, path: Path, size: int) -> None:
        """Rename a planned upload's data file to be the object (copy it across filesystems)."""
        try:
            os.rename(data, path)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            # Staging on another filesystem: one copy there, then rename.
            self._reserve(size)
            local_io.write_atomically(path, lambda out_fd: local_io.copy_fd(data_fd, out_fd, size))
            local_io.unlink_quietly(data)
        fsync_directory(path.parent)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard an upload's parts; an unknown or finished upload is not an error."""
        try:
            directory = self._upload_dir(key, upload_id)
        except ObjectMissing:
            return
        with local_io.storage_errors(f"abort upload {upload_id} of", key):
            shutil.rmtree(directory, ignore_errors=True)

    def list_multipart_uploads(self, prefix: str) -> list[PendingUpload]:
        """Every upload of a key under `prefix` still staged, with its age and staged bytes."""
        with local_io.storage_errors("list uploads under", prefix):
            return staging.list_pending(self._staging, prefix)

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
        return staging.read_upload(self._staging, key, upload_id)

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
