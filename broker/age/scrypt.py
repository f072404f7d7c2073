"""The scrypt (passphrase) recipient type, C2SP age "scrypt".

A scrypt stanza must be the only stanza of a header; `unwrap_file_key` enforces that for every
file, whatever identities are used, because a passphrase-encrypted file is implicitly
authenticated by the passphrase and must not carry other ways in.
"""

from __future__ import annotations

import os
import re

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from broker.age.errors import RecipientError
from broker.age.header import Stanza
from broker.age.interfaces import (
    Identity,
    Recipient,
    arg_bytes,
    check_arg_count,
    check_wrapped_body,
    stanza_error,
)
from broker.age.primitives import KEY_SIZE, aead_unwrap, aead_wrap, b64encode

STANZA_TYPE = "scrypt"
SCRYPT_SALT_LABEL = b"age-encryption.org/v1/scrypt"
SALT_SIZE = 16
SCRYPT_R = 8
SCRYPT_P = 1
DEFAULT_WORK_FACTOR = 18  # age's default: about one second on a laptop
MAX_WORK_FACTOR = 22  # age's default decryption limit; 23 and above are refused
_WORK_FACTOR = re.compile(r"[1-9][0-9]*")  # spec: decimal, no leading zeroes, no sign


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    data = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    if not data:
        raise RecipientError("age scrypt: the passphrase is empty", hint="use a passphrase")
    return data


def _wrap_key(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
    # Why the label prefix on the salt: separates age's use of scrypt from any other use of
    # the same passphrase and salt.
    kdf = Scrypt(
        salt=SCRYPT_SALT_LABEL + salt, length=KEY_SIZE, n=1 << work_factor, r=SCRYPT_R, p=SCRYPT_P
    )
    return kdf.derive(passphrase)


class ScryptRecipient(Recipient):
    stanza_type = STANZA_TYPE

    def __init__(self, passphrase: str | bytes, work_factor: int = DEFAULT_WORK_FACTOR) -> None:
        if not 1 <= work_factor <= 30:
            raise RecipientError(
                f"age scrypt: work factor {work_factor} is out of range 1..30",
                hint=f"use the default {DEFAULT_WORK_FACTOR}",
            )
        self._passphrase = _passphrase_bytes(passphrase)
        self.work_factor = work_factor

    def encode(self) -> str:
        raise RecipientError(
            "age scrypt: a passphrase recipient has no string form",
            hint="keep the passphrase itself secret; there is no public key to share",
        )

    def __repr__(self) -> str:
        return f"ScryptRecipient(work_factor={self.work_factor})"

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def wrap(self, file_key: bytes) -> list[Stanza]:
        # Why a fresh salt per stanza: the wrap key is then single-use (all-zero AEAD nonce).
        salt = os.urandom(SALT_SIZE)
        body = aead_wrap(_wrap_key(self._passphrase, salt, self.work_factor), file_key)
        return [Stanza(STANZA_TYPE, (b64encode(salt), str(self.work_factor)), body)]


class ScryptIdentity(Identity):
    stanza_type = STANZA_TYPE

    def __init__(self, passphrase: str | bytes, max_work_factor: int = MAX_WORK_FACTOR) -> None:
        self._passphrase = _passphrase_bytes(passphrase)
        self.max_work_factor = max_work_factor

    def encode(self) -> str:
        raise RecipientError(
            "age scrypt: a passphrase identity has no string form",
            hint="keep the passphrase itself secret",
        )

    def __repr__(self) -> str:
        return f"ScryptIdentity(max_work_factor={self.max_work_factor})"

    def to_recipient(self) -> ScryptRecipient:
        return ScryptRecipient(self._passphrase)

    def unwrap_stanza(self, stanza: Stanza) -> bytes | None:
        if stanza.type != STANZA_TYPE:
            return None
        check_arg_count(stanza, 2)
        salt = arg_bytes(stanza, 0, "salt", SALT_SIZE)
        text = stanza.args[1]
        if not _WORK_FACTOR.fullmatch(text):
            raise stanza_error(STANZA_TYPE, "work factor is not a positive decimal number")
        # Compare the string length first so that a huge number is not converted at all.
        if len(text) > 2 or int(text) > self.max_work_factor:
            raise stanza_error(
                STANZA_TYPE,
                f"work factor {text[:8]} is above the limit {self.max_work_factor} "
                "(decrypting would take very long)",
            )
        check_wrapped_body(stanza)
        return aead_unwrap(_wrap_key(self._passphrase, salt, int(text)), stanza.body)
