"""The few primitives every part of the age format shares (C2SP age, "Conventions").

HKDF-SHA-256 with 32-byte output, ChaCha20-Poly1305 with the all-zero nonce for wrapping file
keys, HMAC-SHA-256 for the header, and the strict unpadded base64 of the header.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FILE_KEY_SIZE = 16  # spec: "Each file is encrypted with a 128-bit symmetric file key"
KEY_SIZE = 32  # spec: HKDF output is always 32 bytes
TAG_SIZE = 16  # Poly1305 tag
WRAPPED_FILE_KEY_SIZE = FILE_KEY_SIZE + TAG_SIZE  # every native stanza body is exactly this

# Why an all-zero nonce is safe for wrapping: every wrap key is derived from a fresh ephemeral
# secret (X25519, ssh-ed25519), a fresh salt (scrypt) or a fresh HPKE encapsulation, so each key
# encrypts exactly one message.
WRAP_NONCE = bytes(12)

_B64_RAW = re.compile(rb"[A-Za-z0-9+/]*")


def new_file_key() -> bytes:
    """A fresh file key: 16 bytes from the OS CSPRNG; never reuse one across files."""
    return os.urandom(FILE_KEY_SIZE)


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = KEY_SIZE) -> bytes:
    """HKDF-Extract(salt, ikm) then HKDF-Expand(info) to `length` bytes (RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, "sha256").digest()


def aead_wrap(key: bytes, file_key: bytes) -> bytes:
    """Encrypt a file key under a single-use wrap key (see WRAP_NONCE)."""
    return ChaCha20Poly1305(key).encrypt(WRAP_NONCE, file_key, None)


def aead_unwrap(key: bytes, body: bytes) -> bytes | None:
    """Open a wrapped file key; None when the tag does not verify (wrong key: try the next)."""
    try:
        return ChaCha20Poly1305(key).decrypt(WRAP_NONCE, body, None)
    except InvalidTag:
        return None


def b64encode(data: bytes) -> str:
    """Standard base64 without `=` padding, as in age headers."""
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str | bytes) -> bytes:
    """Strict unpadded base64: refuses padding, other characters and non-canonical encodings.

    Canonical means the unused low bits of the last character are zero (RFC 4648 §3.5), so each
    byte string has exactly one encoding and headers are not malleable.
    """
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if not _B64_RAW.fullmatch(raw) or len(raw) % 4 == 1:
        raise ValueError("not unpadded standard base64")
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not unpadded standard base64") from None
    if base64.b64encode(data).rstrip(b"=") != raw:
        raise ValueError("non-canonical base64")
    return data
