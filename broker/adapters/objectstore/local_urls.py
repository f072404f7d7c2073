"""The local store's signed URLs: a token naming one operation on one object until it expires.

The broker hands them out (`LocalStore.presign_upload_part`, `presign_get`) and serves them
(`broker/api/store_urls.py`, through `LocalStore.verify_url`); the token is checked with the
store's URL secret only, no database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from broker.adapters.objectstore.base import PresignedRequest
from broker.adapters.objectstore.rules import MAX_PART_SIZE
from broker.errors import Forbidden

URL_PATH = "/store/v1/"
OP_PUT_PART = "put-part"
OP_GET = "get"
_OP_CODES = {OP_PUT_PART: 1, OP_GET: 2}
_OP_NAMES = {code: name for name, code in _OP_CODES.items()}
_OP_METHODS = {OP_PUT_PART: "PUT", OP_GET: "GET"}

# Token = base64url(payload || HMAC-SHA256(url_secret, TOKEN_DOMAIN || payload)), unpadded.
# payload = version u8 | op u8 | expires u64 (unix s) | part u16 | len(upload_id) u8
#           | max_size u64 (version 2: the most bytes a PUT may send) | upload_id
#           | key (UTF-8, the rest).
# Why a domain string: the MAC can never be confused with another use of the same secret.
# Version 1 tokens (no max_size; issued before the limit) are still read, limited to a part's
# largest size, until they expire.
TOKEN_VERSION = 2
TOKEN_DOMAIN = b"weights-escrow local store url v1\n"
_TOKEN_HEADS = {1: struct.Struct(">BBQHB"), 2: struct.Struct(">BBQHBQ")}
_TOKEN_HEAD = _TOKEN_HEADS[TOKEN_VERSION]
_MAC_SIZE = hashlib.sha256().digest_size
_MAX_TOKEN_CHARS = 2048
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
MIN_URL_SECRET_BYTES = 32


@dataclass(frozen=True)
class UrlGrant:
    """What a verified store URL allows."""

    operation: str  # OP_PUT_PART or OP_GET
    key: str
    upload_id: str  # "" for OP_GET
    part_number: int  # 0 for OP_GET
    expires_at: int  # unix seconds
    max_size: int = MAX_PART_SIZE  # the most bytes a PUT may send (its part's size)


def sign(
    secret: bytes,
    url_base: str,
    operation: str,
    key: str,
    upload_id: str,
    part_number: int,
    expires_at: int,
    max_size: int,
) -> PresignedRequest:
    """The URL allowing `operation` on `key` (a part of `upload_id`, at most `max_size` bytes
    for a PUT) until `expires_at` (unix seconds)."""
    upload = upload_id.encode("ascii")
    payload = (
        _TOKEN_HEAD.pack(
            TOKEN_VERSION,
            _OP_CODES[operation],
            expires_at,
            part_number,
            len(upload),
            max_size,
        )
        + upload
        + key.encode("utf-8")
    )
    token = base64.urlsafe_b64encode(payload + _mac(secret, payload)).rstrip(b"=").decode()
    return PresignedRequest(
        method=_OP_METHODS[operation],
        url=f"{url_base}{URL_PATH}{token}",
        expires_at=datetime.fromtimestamp(expires_at, UTC),
        headers={},
    )


def verify(secret: bytes, token: str, operation: str, now: float) -> UrlGrant:
    """Check a store URL token's signature, then its operation and expiry (Forbidden)."""
    malformed = Forbidden("store URL token is malformed", hint="ask the broker for a new URL")
    if len(token) > _MAX_TOKEN_CHARS or not _TOKEN_RE.fullmatch(token):
        raise malformed
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise malformed from None
    if len(raw) < _TOKEN_HEAD.size + _MAC_SIZE:
        raise malformed
    payload, mac = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise Forbidden(
            "store URL signature does not match: the URL was altered or signed by another "
            "broker",
            hint="ask the broker for a new URL",
        )
    grant = _decode_payload(payload)
    if grant.operation != operation:
        raise Forbidden(
            f"this store URL allows {_OP_METHODS[grant.operation]}, not {_OP_METHODS[operation]}"
        )
    if now >= grant.expires_at:
        when = datetime.fromtimestamp(grant.expires_at, UTC).isoformat()
        raise Forbidden(
            f"store URL expired at {when} ({int(now - grant.expires_at)} s ago)",
            hint="ask the broker for a new URL",
        )
    return grant


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, TOKEN_DOMAIN + payload, hashlib.sha256).digest()


def _decode_payload(payload: bytes) -> UrlGrant:
    """Parse a payload whose MAC was already checked (so malformed means another version)."""
    try:
        head = _TOKEN_HEADS.get(payload[0]) if payload else None
        if head is None:
            raise ValueError
        version, op, expires_at, part_number, id_len, *more = head.unpack_from(payload)
        max_size = more[0] if more else MAX_PART_SIZE
        rest = payload[head.size :]
        if op not in _OP_NAMES or len(rest) < id_len:
            raise ValueError
        upload_id, key = rest[:id_len].decode("ascii"), rest[id_len:].decode("utf-8")
    except (struct.error, ValueError):
        raise Forbidden(
            "store URL token has an unknown format", hint="ask the broker for a new URL"
        ) from None
    return UrlGrant(_OP_NAMES[op], key, upload_id, part_number, expires_at, max_size)
