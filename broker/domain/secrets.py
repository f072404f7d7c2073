"""Bearer secrets of every kind: `<prefix>_<id>_<secret>`, looked up by id, checked by SHA-256
in constant time. They are 256-bit random values, so a fast hash is enough (no password hash):
nobody can brute-force the preimage, and the check runs on every request.

Prefixes: `esk` service tokens, `eat` user access tokens, `ert` user refresh tokens, `edc`
device codes (RFC 8628), `ell` single-use login links, `ehk` API keys of hosted access.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

_SHAPE = re.compile(r"^([a-z]{3})_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewSecret:
    id: str
    secret_sha256: bytes
    plaintext: str  # shown once, never stored or logged


def new_secret(prefix: str) -> NewSecret:
    secret_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewSecret(secret_id, hash_secret(secret), f"{prefix}_{secret_id}_{secret}")


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_secret(text: str, prefix: str) -> tuple[str, str] | None:
    """(id, secret) when `text` is shaped like a secret with this prefix, else None."""
    match = _SHAPE.match(text.strip())
    if not match or match.group(1) != prefix:
        return None
    return match.group(2), match.group(3)


def prefix_of(text: str) -> str | None:
    match = _SHAPE.match(text.strip())
    return match.group(1) if match else None


def secret_matches(secret: str, stored_sha256: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_sha256)
