"""The S3 object store: AWS or any S3-compatible endpoint (MinIO, Ceph, R2, s3rver, moto).

Weights never pass through the broker here: clients PUT parts to presigned `UploadPart` URLs and
GET objects from presigned `GetObject` URLs. Only the verification worker reads payloads, as a
stream (`open_read`), in constant memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:  # boto3-stubs: a development dependency, for mypy only
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

from broker.adapters.objectstore.base import (
    ObjectInfo,
    PendingUpload,
    PresignedRequest,
    UploadedPart,
)
from broker.adapters.objectstore.rules import (
    MAX_PART_SIZE,
    check_expires_in,
    check_key,
    check_part_list,
    check_part_number,
    copy_part_size,
    normalise_etag,
)
from broker.errors import (
    ConfigError,
    EscrowError,
    InvalidInput,
    NotSupported,
    ObjectMissing,
    StorageError,
    StoreFull,
)

DEFAULT_POOL = 16  # parallel part transfers (the worker, list/complete calls) share the pool
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_BAD_PART_CODES = {"InvalidPart", "InvalidPartOrder", "EntityTooSmall", "MalformedXML"}
# What S3-compatible stores answer when they have no room: MinIO (disk, bucket quota), Ceph RGW
# (QuotaExceeded), and any store answering HTTP 507. EntityTooLarge is left out on purpose: it
# means one object is over the size limit, not that the store is full.
_FULL_CODES = {
    "XMinioStorageFull",
    "XMinioAdminBucketQuotaExceeded",
    "QuotaExceeded",
    "InsufficientStorage",
    "StorageFull",
}
_NO_LOCK_CONFIGURATION = "ObjectLockConfigurationNotFoundError"
# What a server answers for an S3 operation it does not implement (s3rver 3.7 answers
# ListParts and ListMultipartUploads with 405 MethodNotAllowed).
_UNSUPPORTED_CODES = {"NotImplemented", "MethodNotAllowed"}


class S3Store:
    """An ObjectStore on one bucket, under one key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        *,
        session: boto3.session.Session | None = None,
        max_pool_connections: int = DEFAULT_POOL,
        max_attempts: int = 5,
        connect_timeout: float = 10,
        read_timeout: float = 60,
    ) -> None:
        if not bucket:
            raise ConfigError("S3 store needs a bucket name", hint="write s3://bucket/prefix")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix:
            check_key(prefix.rstrip("/"))
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        session = session or boto3.session.Session()
        if region is None and endpoint_url and session.region_name is None:
            region = "us-east-1"  # S3-compatible servers ignore it; SigV4 still needs one
        config = Config(
            signature_version="s3v4",
            # A custom endpoint (MinIO, Ceph, s3rver, moto on 127.0.0.1) rarely resolves
            # <bucket>.<host>; on AWS botocore picks virtual-hosted style where it can.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"mode": "standard", "max_attempts": max_attempts},
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # Why "when_required": botocore's default CRC32 on every request costs ~20% of
            # throughput, breaks some S3-compatible servers, and would put checksum parameters
            # into presigned URLs that a plain HTTP client cannot satisfy.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )

    def __repr__(self) -> str:
        return f"S3Store({self.bucket!r}, {self.prefix!r}, endpoint_url={self.endpoint_url!r})"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    # -- small objects -------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors("put", key):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as body:
            return body.read()

    def put_stream(self, key: str, source: BinaryIO, size: int) -> None:
        """Write `size` bytes from `source` as `key`: one PUT when they fit in a part, else a
        multipart upload whose parts are read one at a time (memory: one part)."""
        part_size = copy_part_size(size)
        if size <= part_size:
            data = _read_exactly(source, size, key)
            with self._errors("put", key):
                self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
            return
        upload_id = self.create_multipart(key)
        try:
            parts = [
                self._upload_part(key, upload_id, number, _read_exactly(source, length, key))
                for number, length in _part_lengths(size, part_size)
            ]
            self.complete_multipart(key, upload_id, parts)
        except BaseException:
            with suppress(EscrowError):
                self.abort_multipart(key, upload_id)
            raise

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> UploadedPart:
        with self._errors(f"upload part {number} of", key):
            response = self._client.upload_part(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
        return UploadedPart(number=number, size=len(data), etag=normalise_etag(response["ETag"]))

    def retain_until(self, key: str, until: datetime) -> None:
        """Object Lock the object's current version in COMPLIANCE mode until `until`: no one,
        not even the bucket's owner or root, can delete or overwrite that version before then.

        Why after the upload, not at CreateMultipartUpload: with retention set at creation (or
        a bucket default retention), S3 demands Content-MD5 or a checksum header on every part,
        which the presigned part URLs clients use cannot carry."""
        with self._errors("lock", key):
            self._client.put_object_retention(
                Bucket=self.bucket,
                Key=self._key(key),
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
            )

    def retained_until(self, key: str) -> datetime | None:
        try:
            with self._errors("head", key):
                response = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ObjectMissing:
            return None
        until = response.get("ObjectLockRetainUntilDate")
        return until if isinstance(until, datetime) else None

    def check_object_lock(self) -> str:
        with self._errors("lock", self.bucket):
            try:
                found = self._client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = found.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != _NO_LOCK_CONFIGURATION:
                    raise
                enabled = None
        if enabled != "Enabled":
            raise StorageError(
                f"s3 bucket {self.bucket!r} has no Object Lock, so sealing a deposit would "
                "fail when it locks the objects",
                hint='create the bucket with Object Lock enabled (README, "Immutability"), or '
                "unset ESCROW_OBJECT_LOCK_DAYS",
            )
        return "Object Lock enabled"

    def open_read(self, key: str) -> BinaryIO:
        with self._errors("get", key):
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        return _Body(response["Body"], self._errors, key)  # type: ignore[return-value]

    def list_keys(self, prefix: str) -> list[str]:
        """Every object key under `prefix`, sorted (keys are relative to the store's prefix)."""
        keys = []
        with self._errors("list", prefix):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                keys += [item["Key"][len(self.prefix) :] for item in page.get("Contents", [])]
        return sorted(keys)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with self._errors("head", key):
                response = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ObjectMissing:
            return None
        return ObjectInfo(
            key=key, size=response["ContentLength"], etag=normalise_etag(response["ETag"])
        )

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    # -- multipart -----------------------------------------------------------------------------

    def create_multipart(self, key: str, part_sizes: Sequence[int] | None = None) -> str:
        """A new multipart upload (S3 needs no plan: `part_sizes` is not used)."""
        with self._errors("create upload for", key):
            response = self._client.create_multipart_upload(Bucket=self.bucket, Key=self._key(key))
        return response["UploadId"]

    def presign_upload_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        expires_in: int,
        size: int = MAX_PART_SIZE,
    ) -> PresignedRequest:
        # `size` is not signed in: the bytes go to S3, not through the broker, and completion
        # checks each part's size.
        check_part_number(part_number)
        params = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "UploadId": upload_id,
            "PartNumber": part_number,
        }
        return self._presign("upload_part", "PUT", params, key, expires_in)

    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        parts: list[UploadedPart] = []
        with self._errors(f"list parts of upload {upload_id} of", key):
            pages = self._client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=self._key(key), UploadId=upload_id
            )
            for page in pages:
                for p in page.get("Parts", []):
                    parts.append(
                        UploadedPart(
                            number=p["PartNumber"], size=p["Size"], etag=normalise_etag(p["ETag"])
                        )
                    )
        return sorted(parts, key=lambda p: p.number)

    def complete_multipart(self, key: str, upload_id: str, parts: list[UploadedPart]) -> None:
        check_part_list([p.number for p in parts])
        listed: list[CompletedPartTypeDef] = [
            {"PartNumber": p.number, "ETag": f'"{normalise_etag(p.etag)}"'} for p in parts
        ]
        with self._errors(f"complete upload {upload_id} of", key):
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},
            )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard an upload's parts; an unknown or finished upload is not an error."""
        try:
            with self._errors(f"abort upload {upload_id} of", key):
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._key(key), UploadId=upload_id
                )
        except ObjectMissing:
            return

    def list_multipart_uploads(self, prefix: str) -> list[PendingUpload]:
        """ListMultipartUploads under `prefix`, each with its parts' bytes and newest part."""
        found = []
        with self._errors("list uploads under", prefix):
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            uploads = [u for page in pages for u in page.get("Uploads", [])]
        for upload in uploads:
            key = upload["Key"][len(self.prefix) :]
            started = upload["Initiated"]
            newest, size = started, 0
            try:
                with self._errors(f"list parts of upload {upload['UploadId']} of", key):
                    part_pages = self._client.get_paginator("list_parts").paginate(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    for page in part_pages:
                        for part in page.get("Parts", []):
                            size += part["Size"]
                            newest = max(newest, part["LastModified"])
            except ObjectMissing:
                continue  # completed or aborted since it was listed
            found.append(
                PendingUpload(
                    key=key,
                    upload_id=upload["UploadId"],
                    started=started,
                    last_activity=newest,
                    size=size,
                )
            )
        return sorted(found, key=lambda u: (u.key, u.started, u.upload_id))

    # -- downloads -----------------------------------------------------------------------------

    def presign_get(self, key: str, expires_in: int) -> PresignedRequest:
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        return self._presign("get_object", "GET", params, key, expires_in)

    def check(self) -> str:
        with self._errors("reach bucket", self.bucket):
            self._client.head_bucket(Bucket=self.bucket)
        where = self.endpoint_url or "AWS"
        return f"s3 bucket {self.bucket!r} prefix {self.prefix!r} at {where}"

    # -- internals -----------------------------------------------------------------------------

    def _presign(
        self, operation: str, method: str, params: dict[str, Any], key: str, expires_in: int
    ) -> PresignedRequest:
        """A SigV4 query-string URL. Only `host` is signed and the payload is UNSIGNED-PAYLOAD,
        so a plain client needs no extra header (it may add Range to a GET)."""
        check_expires_in(expires_in)
        with self._errors(f"presign {method}", key):
            url = self._client.generate_presigned_url(
                operation, Params=params, ExpiresIn=expires_in, HttpMethod=method
            )
        return PresignedRequest(
            method=method,
            url=url,
            expires_at=datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=expires_in),
            headers={},
        )

    @contextmanager
    def _errors(self, operation: str, key: str) -> Iterator[None]:
        """Translate botocore errors into ours: operation, bucket and key, never credentials."""
        where = f"s3 {operation} {key!r} in bucket {self.bucket!r}"
        try:
            yield
        except ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code", "?"))
            message = str(error.get("Message", ""))[:200]
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchUpload":
                raise ObjectMissing(
                    f"{where}: no such multipart upload",
                    hint="it was completed or aborted, or never created; start a new upload",
                ) from None
            if code in _MISSING_CODES or (status == 404 and code != "NoSuchBucket"):
                raise ObjectMissing(f"{where}: no such object") from None
            if code in _BAD_PART_CODES:
                raise InvalidInput(
                    f"{where}: the parts listed do not match the upload ({code}: {message})",
                    hint="list the upload's parts to see what arrived, and re-send the part",
                ) from None
            if code in _FULL_CODES or status == 507:
                raise StoreFull(
                    f"the object store is full: {where} failed: {code} {message}".rstrip(),
                    hint="nothing was stored; the operator must free space or raise the bucket's "
                    "quota (`escrow admin uploads gc` frees abandoned uploads), then run the same "
                    "command again",
                ) from None
            hint = ""
            if operation == "lock":
                hint = (
                    'create the bucket with Object Lock enabled (README, "Immutability"), or '
                    "unset ESCROW_OBJECT_LOCK_DAYS"
                )
            elif code == "NoSuchBucket":
                hint = "create the bucket, or fix ESCROW_STORAGE_URL"
            elif code in ("AccessDenied", "403") or status == 403:
                hint = (
                    "check the credentials' permissions on the bucket; without s3:ListBucket, "
                    "S3 answers 403 for a missing key"
                )
            if code in _UNSUPPORTED_CODES or status in (405, 501):
                raise NotSupported(
                    f"{where}: the object store does not support this operation "
                    f"({code}: {message})".rstrip(),
                    hint=hint
                    or 'README, "S3 compatibility", lists the operations the broker uses and '
                    "which are optional; use a store that implements this one",
                ) from None
            raise StorageError(f"{where} failed: {code} {message}".rstrip(), hint=hint) from None
        except BotoCoreError as e:
            # BotoCoreError texts name the endpoint or the problem, never secret values.
            raise StorageError(
                f"the object store did not answer: {where} failed: {e}",
                hint="nothing was changed; retry when the store is back (the operator: "
                "`escrow admin health`)",
            ) from None


def _part_lengths(size: int, part_size: int) -> Iterator[tuple[int, int]]:
    """(part number, length) of each part of a `size`-byte object."""
    for number, offset in enumerate(range(0, size, part_size), start=1):
        yield number, min(part_size, size - offset)


def _read_exactly(source: BinaryIO, size: int, key: str) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = source.read(remaining)
        if not chunk:
            raise StorageError(
                f"s3 put {key!r}: the source ended {remaining} bytes before the {size} expected",
                hint="the source object changed while it was copied; copy it again",
            )
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _Body(io.RawIOBase):
    """A StreamingBody that raises StorageError, not botocore errors, when reading fails."""

    def __init__(self, body: Any, errors: Any, key: str) -> None:
        self._body = body
        self._errors = errors
        self._key = key

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with self._errors("read", self._key):
            return self._body.read(None if size is None or size < 0 else size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
