"""The wrapped-blob envelope every custody backend writes, readable without any key.

    {"v": 1, "backend": "local", "key_id": "…", …backend fields, base64…}

Compact JSON with sorted keys: small, self-describing, and extensible (a new version or backend
adds fields). `describe_blob` reads backend and key id without decrypting, so a rotation can
find the blobs still wrapped by an old key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass

from broker.errors import CustodyError

BLOB_VERSION = 1
MAX_BLOB_BYTES = 64 * 1024
MAX_SECRET_BYTES = 4096  # AWS KMS Encrypt's limit; local custody keeps the same bound


@dataclass(frozen=True)
class BlobInfo:
    version: int
    backend: str
    key_id: str


def encode_blob(backend: str, key_id: str, fields: Mapping[str, bytes]) -> bytes:
    document: dict[str, object] = {"v": BLOB_VERSION, "backend": backend, "key_id": key_id}
    for name, value in fields.items():
        document[name] = base64.b64encode(value).decode("ascii")
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")


def decode_blob(blob: bytes) -> tuple[BlobInfo, dict[str, object]]:
    """Parse the envelope; backend fields stay as stored (use `field_bytes`)."""
    if not isinstance(blob, bytes | bytearray | memoryview) or len(blob) > MAX_BLOB_BYTES:
        raise CustodyError(f"wrapped blob is not a blob of at most {MAX_BLOB_BYTES} bytes")
    try:
        document = json.loads(bytes(blob))
    except (UnicodeDecodeError, ValueError):
        raise CustodyError(
            "wrapped blob is not a custody envelope (not JSON)",
            hint="blobs are JSON documents with v, backend and key_id",
        ) from None
    if not isinstance(document, dict):
        raise CustodyError("wrapped blob is not a custody envelope (not a JSON object)")
    version, backend, key_id = document.get("v"), document.get("backend"), document.get("key_id")
    if version != BLOB_VERSION:
        raise CustodyError(
            f"wrapped blob has version {version!r}; this broker reads version {BLOB_VERSION}",
            hint="upgrade the broker to read newer blobs",
        )
    if not isinstance(backend, str) or not isinstance(key_id, str) or not backend or not key_id:
        raise CustodyError("wrapped blob does not name its backend and key id")
    return BlobInfo(version, backend, key_id), document


def describe_blob(blob: bytes) -> BlobInfo:
    """Which backend and key a blob needs, without decrypting it."""
    return decode_blob(blob)[0]


def field_bytes(document: Mapping[str, object], name: str, info: BlobInfo) -> bytes:
    value = document.get(name)
    try:
        if not isinstance(value, str):
            raise ValueError
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CustodyError(
            f"wrapped blob for {info.backend} key {info.key_id} has no valid {name!r} field"
        ) from None


def check_context(context: Mapping[str, str]) -> dict[str, str]:
    """A context is a non-empty dict of strings: an unbound blob would open anywhere."""
    if not isinstance(context, Mapping) or not context:
        raise CustodyError(
            "a wrap context must name what the secret protects, e.g. {'deposit': '<id>'}"
        )
    for name, value in context.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise CustodyError(
                f"wrap context entries must be strings; {name!r} is {type(value).__name__}"
            )
    return dict(context)


def check_secret(secret: bytes) -> bytes:
    if not isinstance(secret, bytes | bytearray) or not 1 <= len(secret) <= MAX_SECRET_BYTES:
        raise CustodyError(f"custody wraps secrets of 1..{MAX_SECRET_BYTES} bytes")
    return bytes(secret)


def require_backend(info: BlobInfo, backend: str, key_id: str) -> None:
    if info.backend != backend:
        raise CustodyError(
            f"blob was wrapped by {info.backend} key {info.key_id}; this broker's custody "
            f"is {backend} (key {key_id})",
            hint=f"configure {info.backend} custody with key {info.key_id} to read it",
        )
