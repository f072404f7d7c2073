"""The object store port: what the services need from a bucket, nothing more.

Keys are bucket keys relative to the store's prefix (e.g. `deposits/<id>/files/0.payload`);
the broker alone chooses them. Adapters translate vendor errors into `StorageError` /
`ObjectMissing` from `broker.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol


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
    def open_read(self, key: str) -> BinaryIO: ...
    def head(self, key: str) -> ObjectInfo | None: ...
    def delete(self, key: str) -> None: ...

    # multipart upload: bytes go from the client straight to the store
    def create_multipart(self, key: str) -> str: ...
    def presign_upload_part(
        self, key: str, upload_id: str, part_number: int, expires_in: int
    ) -> PresignedRequest: ...
    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]: ...
    def complete_multipart(self, key: str, upload_id: str, parts: list[UploadedPart]) -> None: ...
    def abort_multipart(self, key: str, upload_id: str) -> None: ...

    def presign_get(self, key: str, expires_in: int) -> PresignedRequest: ...
    def check(self) -> str: ...
