"""The native X25519 recipient type (`age1…` / `AGE-SECRET-KEY-1…`), C2SP age "X25519"."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from broker.age import bech32
from broker.age.errors import IdentityError, RecipientError
from broker.age.header import Stanza
from broker.age.interfaces import (
    Identity,
    Recipient,
    arg_bytes,
    check_arg_count,
    check_wrapped_body,
    decode_identity,
    decode_recipient,
    stanza_error,
)
from broker.age.primitives import aead_unwrap, aead_wrap, b64encode, hkdf_sha256

STANZA_TYPE = "X25519"
RECIPIENT_HRP = "age"
IDENTITY_HRP = "AGE-SECRET-KEY-"
X25519_INFO = b"age-encryption.org/v1/X25519"
POINT_SIZE = 32
SCALAR_SIZE = 32


def x25519(scalar: bytes, point: bytes) -> bytes:
    """X25519(scalar, point); ValueError if the result is all zero (a low-order point)."""
    # cryptography refuses the all-zero shared secret itself, as the spec requires ("MUST abort").
    return X25519PrivateKey.from_private_bytes(scalar).exchange(
        X25519PublicKey.from_public_bytes(point)
    )


def is_low_order(point: bytes) -> bool:
    """Whether X25519 with this point gives the all-zero secret (for any scalar)."""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(point))
    except ValueError:
        return True
    return False


def wrap_with_share(
    file_key: bytes, their_point: bytes, info: bytes, tweak: bytes | None = None
) -> tuple[bytes, bytes]:
    """X25519 key wrap shared by the X25519 and ssh-ed25519 types: (ephemeral share, body).

    Why a fresh ephemeral secret per stanza: the wrap key is then single-use, which is what makes
    the all-zero ChaCha20-Poly1305 nonce safe.
    """
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(their_point))
        if tweak is not None:
            shared = x25519(tweak, shared)
    except ValueError:
        raise RecipientError(
            "age recipient: the public key is a low-order point",
            hint="the recipient is invalid; ask its owner for a correct public key",
        ) from None
    # Why share || recipient as salt: binds the wrap key to both ends of this exchange.
    wrap_key = hkdf_sha256(shared, salt=share + their_point, info=info)
    return share, aead_wrap(wrap_key, file_key)


class X25519Recipient(Recipient):
    stanza_type = STANZA_TYPE

    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != POINT_SIZE:
            raise RecipientError(
                f"age X25519 recipient: public key is {len(public_key)} bytes, expected 32",
                hint="an X25519 recipient looks like age1 followed by 58 characters",
            )
        if is_low_order(public_key):
            raise RecipientError(
                "age X25519 recipient: the public key is a low-order point",
                hint="the recipient is invalid; ask its owner for a correct public key",
            )
        self.public_key = bytes(public_key)

    @classmethod
    def parse(cls, text: str) -> X25519Recipient:
        return cls(decode_recipient(text, RECIPIENT_HRP, "age X25519 recipient"))

    def encode(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self.public_key)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        share, body = wrap_with_share(file_key, self.public_key, X25519_INFO)
        return [Stanza(STANZA_TYPE, (b64encode(share),), body)]


class X25519Identity(Identity):
    stanza_type = STANZA_TYPE

    def __init__(self, secret_key: bytes) -> None:
        if len(secret_key) != SCALAR_SIZE:
            raise IdentityError(
                f"age X25519 identity: secret key is {len(secret_key)} bytes, expected 32",
                hint="an X25519 identity looks like AGE-SECRET-KEY-1 followed by 58 characters",
            )
        self._secret = bytes(secret_key)
        self._private = X25519PrivateKey.from_private_bytes(self._secret)
        self._public = self._private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> X25519Identity:
        return cls(os.urandom(SCALAR_SIZE))

    @classmethod
    def parse(cls, text: str) -> X25519Identity:
        return cls(decode_identity(text, IDENTITY_HRP, "age X25519 identity"))

    def encode(self) -> str:
        return bech32.encode(IDENTITY_HRP, self._secret, upper=True)

    def to_recipient(self) -> X25519Recipient:
        return X25519Recipient(self._public)

    def unwrap_stanza(self, stanza: Stanza) -> bytes | None:
        if stanza.type != STANZA_TYPE:
            return None
        check_arg_count(stanza, 1)
        share = arg_bytes(stanza, 0, "share", POINT_SIZE)
        check_wrapped_body(stanza)
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:
            raise stanza_error(STANZA_TYPE, "share is a low-order point") from None
        wrap_key = hkdf_sha256(shared, salt=share + self._public, info=X25519_INFO)
        return aead_unwrap(wrap_key, stanza.body)
