"""The object store port: what the services need from a bucket, nothing more.

Keys are bucket keys relative to the store's prefix (e.g. `deposits/<id>/files/0.payload`);
the broker alone chooses them. Adapters translate vendor errors into `StorageError` /
`ObjectMissing` from `broker.errors`.

Semantics both adapters share (see `rules.py` for the limits, which are S3's):
- a key that is not a safe relative key (`..`, absolute, backslash, empty segment, leading `.`)
  raises `InvalidInput` before anything is touched;
- `get_bytes` / `open_read` of a missing key raise `ObjectMissing`; `head` returns None;
  `delete` of a missing key is not an error (as in S3);
- ETags are opaque strings, kept without HTTP quotes. A part's ETag is what the PUT to its
  presigned URL answered (S3: MD5 hex; local store: a random version id);
- an unknown upload id raises `ObjectMissing`, except in `abort_multipart`, which (like
  `delete`) is not an error for an unknown or already finished upload; a completion whose parts
  do not match what was received (ETag, order, a non-last part under 5 MiB) raises
  `InvalidInput`; `UploadedPart.size` is informative only and not checked on completion;
- a part's presigned PUT is for at most `size` bytes: the local store's URL server refuses a
  longer body (413) before reading it; S3 receives the bytes itself (its own 5 GiB limit) and
  the broker checks every part's size at completion;
- presigned URLs live 1..604800 s and need no headers beyond what the method implies
  (`PresignedRequest.headers` is empty for both adapters today);
- `put_stream` writes exactly `size` bytes read from a stream, in constant memory (the mirror
  and fixity repairs copy ciphertext with it); readers see the old object or the whole new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol, runtime_checkable

from broker.adapters.objectstore.rules import MAX_PART_SIZE


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class UploadedPart:
    number: int  # 1-based, as in S3
    size: int
    etag: str


@dataclass(frozen=True)
class PendingUpload:
    """A multipart upload the store still holds (not completed, not aborted)."""

    key: str
    upload_id: str
    started: datetime
    last_activity: datetime  # the newest part received, else `started`
    size: int  # bytes its parts hold


@dataclass(frozen=True)
class PresignedRequest:
    """A URL a client may call without broker credentials until `expires_at`."""

    method: str
    url: str
    expires_at: datetime
    headers: dict[str, str]


class ObjectStore(Protocol):
    # small objects (headers, manifests, wrapped identities, audit mirrors)
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def put_stream(self, key: str, source: BinaryIO, size: int) -> None: ...
    def open_read(self, key: str) -> BinaryIO: ...
    def head(self, key: str) -> ObjectInfo | None: ...
    def delete(self, key: str) -> None: ...
    def list_keys(self, prefix: str) -> list[str]: ...  # sorted; recovery reads the bucket

    # multipart upload: bytes go from the client straight to the store
    # `part_sizes`, every part's size in order, lets a store lay parts out in place (the local
    # store then completes without a second copy); S3 does not need it.
    def create_multipart(self, key: str, part_sizes: Sequence[int] | None = None) -> str: ...
    def presign_upload_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        expires_in: int,
        size: int = MAX_PART_SIZE,
    ) -> PresignedRequest: ...
    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]: ...
    def complete_multipart(self, key: str, upload_id: str, parts: list[UploadedPart]) -> None: ...
    def abort_multipart(self, key: str, upload_id: str) -> None: ...
    def list_multipart_uploads(self, prefix: str) -> list[PendingUpload]: ...  # sorted by key

    def presign_get(self, key: str, expires_in: int) -> PresignedRequest: ...
    def check(self) -> str: ...


@runtime_checkable
class SupportsRetention(Protocol):
    """A store that can make an object's current version undeletable until a date (S3 Object
    Lock, compliance mode). The local store cannot: a file's owner can always remove it."""

    def retain_until(self, key: str, until: datetime) -> None: ...

    def retained_until(self, key: str) -> datetime | None:
        """Until when the object's current version is locked; None if it is not (or absent)."""
        ...

    def check_object_lock(self) -> str:
        """What the bucket's Object Lock is; StorageError if it has none."""
        ...
