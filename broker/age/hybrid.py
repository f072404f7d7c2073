"""The post-quantum hybrid recipient type `mlkem768x25519` (`age1pq1…` / `AGE-SECRET-KEY-PQ-1…`).

C2SP age, "The MLKEM768-X25519 (i.e. X-Wing) hybrid post-quantum recipient type": the file key
is sealed with HPKE base mode (RFC 9180) using the MLKEM768-X25519 KEM of
draft-ietf-hpke-pq / filippo.io/hpke-pq, HKDF-SHA256 and ChaCha20-Poly1305, with info
`age-encryption.org/mlkem768x25519` and empty aad. The stanza is
`-> mlkem768x25519 <base64 enc, 1120 bytes>` with the 32-byte HPKE ciphertext as body.

The identity is a 32-byte seed, expanded with SHAKE-256 to 96 bytes: the first 64 are the ML-KEM
seed (d || z), the last 32 the X25519 secret. The recipient is the ML-KEM-768 encapsulation key
(1184 bytes) followed by the X25519 public key (32 bytes).
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem
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
from broker.age.primitives import b64encode
from broker.age.x25519 import is_low_order

STANZA_TYPE = "mlkem768x25519"
RECIPIENT_HRP = "age1pq"
IDENTITY_HRP = "AGE-SECRET-KEY-PQ-"
HPKE_INFO = b"age-encryption.org/mlkem768x25519"
SEED_SIZE = 32
EXPANDED_SEED_SIZE = 96  # SHAKE-256(seed): 64 bytes ML-KEM seed d || z, 32 bytes X25519 secret
MLKEM_SEED_SIZE = 64
MLKEM768_PUBLIC_KEY_SIZE = 1184
MLKEM768_CIPHERTEXT_SIZE = 1088
X25519_SIZE = 32
RECIPIENT_SIZE = MLKEM768_PUBLIC_KEY_SIZE + X25519_SIZE  # 1216
ENC_SIZE = MLKEM768_CIPHERTEXT_SIZE + X25519_SIZE  # 1120: ML-KEM ciphertext || X25519 share

_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def _public_key(data: bytes) -> hpke.MLKEM768X25519PublicKey:
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(data[:MLKEM768_PUBLIC_KEY_SIZE]),
        X25519PublicKey.from_public_bytes(data[MLKEM768_PUBLIC_KEY_SIZE:]),
    )


class HybridRecipient(Recipient):
    stanza_type = STANZA_TYPE
    post_quantum = True

    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != RECIPIENT_SIZE:
            raise RecipientError(
                f"age hybrid recipient: public key is {len(public_key)} bytes, "
                f"expected {RECIPIENT_SIZE}",
                hint="copy the whole age1pq1… recipient again; it is about 1960 characters",
            )
        try:
            self._key = _public_key(public_key)
        except ValueError:
            raise RecipientError(
                "age hybrid recipient: the ML-KEM-768 public key is not valid",
                hint="the recipient is damaged; ask its owner for it again",
            ) from None
        if is_low_order(public_key[MLKEM768_PUBLIC_KEY_SIZE:]):
            raise RecipientError(
                "age hybrid recipient: the X25519 public key is a low-order point",
                hint="the recipient is invalid; ask its owner for a correct public key",
            )
        self.public_key = bytes(public_key)

    @classmethod
    def parse(cls, text: str) -> HybridRecipient:
        return cls(decode_recipient(text, RECIPIENT_HRP, "age hybrid recipient"))

    def encode(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self.public_key)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        # HPKE SealBase generates a fresh encapsulation for every call, so every stanza gets its
        # own single-use key and nonce schedule; nothing to choose here.
        sealed = _SUITE.encrypt(file_key, self._key, info=HPKE_INFO)
        enc, body = sealed[:ENC_SIZE], sealed[ENC_SIZE:]
        return [Stanza(STANZA_TYPE, (b64encode(enc),), body)]


class HybridIdentity(Identity):
    stanza_type = STANZA_TYPE

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise IdentityError(
                f"age hybrid identity: seed is {len(seed)} bytes, expected {SEED_SIZE}",
                hint="a hybrid identity looks like AGE-SECRET-KEY-PQ-1 followed by 58 characters",
            )
        self._seed = bytes(seed)
        # Why SHAKE-256 expansion: it is how hpke-pq's MLKEM768-X25519 derives both halves
        # from one seed, so a 32-byte identity interoperates with age and age-encryption.
        expanded = hashlib.shake_256(self._seed).digest(EXPANDED_SEED_SIZE)
        mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:MLKEM_SEED_SIZE])
        self._x25519 = X25519PrivateKey.from_private_bytes(expanded[MLKEM_SEED_SIZE:])
        self._key = hpke.MLKEM768X25519PrivateKey(mlkem_key, self._x25519)
        self._mlkem = mlkem_key

    @classmethod
    def generate(cls) -> HybridIdentity:
        return cls(os.urandom(SEED_SIZE))

    @classmethod
    def parse(cls, text: str) -> HybridIdentity:
        return cls(decode_identity(text, IDENTITY_HRP, "age hybrid identity"))

    def encode(self) -> str:
        return bech32.encode(IDENTITY_HRP, self._seed, upper=True)

    def to_recipient(self) -> HybridRecipient:
        # Derived here, not at parse: a key release parses the deposit identity only to unwrap.
        return HybridRecipient(
            self._mlkem.public_key().public_bytes_raw()
            + self._x25519.public_key().public_bytes_raw()
        )

    def unwrap_stanza(self, stanza: Stanza) -> bytes | None:
        if stanza.type != STANZA_TYPE:
            return None
        check_arg_count(stanza, 1)
        enc = arg_bytes(stanza, 0, "enc", ENC_SIZE)
        check_wrapped_body(stanza)
        # The X25519 half must not give the all-zero shared secret (identity or low-order
        # point). HPKE would only fail the tag; the spec wants such a stanza refused outright.
        try:
            self._x25519.exchange(X25519PublicKey.from_public_bytes(enc[MLKEM768_CIPHERTEXT_SIZE:]))
        except ValueError:
            raise stanza_error(STANZA_TYPE, "the X25519 share is a low-order point") from None
        try:
            return _SUITE.decrypt(enc + stanza.body, self._key, info=HPKE_INFO)
        except InvalidTag:
            return None
