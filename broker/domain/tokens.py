"""Service tokens: `esk_<id>_<secret>`, looked up by id, checked by SHA-256 in constant time.

Tokens are 256-bit random values, so a fast hash is enough (no password hashing): nobody can
brute-force the preimage, and the check runs on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "esk"  # noqa: S105 (a public prefix, not a secret)
_TOKEN_RE = re.compile(r"^esk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewToken:
    id: str
    secret_sha256: bytes
    plaintext: str  # shown once to the operator, never stored or logged


def new_token() -> NewToken:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewToken(token_id, hash_secret(secret), f"{TOKEN_PREFIX}_{token_id}_{secret}")


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_token(token: str) -> tuple[str, str] | None:
    """(id, secret), or None when the text is not shaped like one of our tokens."""
    match = _TOKEN_RE.match(token.strip())
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, stored_sha256: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_sha256)
