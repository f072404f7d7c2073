"""The two one-method interfaces of age: a Recipient wraps a file key, an Identity unwraps it.

As in FiloSottile/age, an identity is handed every stanza of a header and picks out those
addressed to it. `Identity.unwrap_stanza` answers with the file key, with `None` (the sentinel
for "not mine, try the next stanza or identity"), or raises `HeaderError` for a stanza of its
type that is malformed, which must fail the whole file rather than be skipped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from broker.age import bech32
from broker.age.errors import AgeError, HeaderError, IdentityError, RecipientError
from broker.age.header import Stanza
from broker.age.primitives import FILE_KEY_SIZE, WRAPPED_FILE_KEY_SIZE, b64decode


class Recipient(ABC):
    """A public key (or passphrase) that file keys are wrapped to."""

    stanza_type: ClassVar[str]
    post_quantum: ClassVar[bool] = False

    @abstractmethod
    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Stanzas that carry `file_key` for this recipient."""

    @abstractmethod
    def encode(self) -> str:
        """The recipient's string form (`age1…`, `age1pq1…`, `ssh-ed25519 AAAA…`)."""

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.encode()!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Recipient)
            and type(other) is type(self)
            and (other.encode() == self.encode())
        )

    def __hash__(self) -> int:
        return hash((type(self), self.encode()))


class Identity(ABC):
    """A private key (or passphrase) that can unwrap file keys from some stanzas."""

    stanza_type: ClassVar[str]

    @abstractmethod
    def unwrap_stanza(self, stanza: Stanza) -> bytes | None:
        """The file key, `None` if the stanza is not for this identity, or HeaderError."""

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key from the first stanza this identity opens, else None."""
        for stanza in stanzas:
            file_key = self.unwrap_stanza(stanza)
            if file_key is not None:
                return file_key
        return None

    @abstractmethod
    def to_recipient(self) -> Recipient:
        """The public counterpart, to encrypt to this identity."""

    @abstractmethod
    def encode(self) -> str:
        """The secret string form (`AGE-SECRET-KEY-1…`). Handle as a secret."""

    def __repr__(self) -> str:
        # Never the secret: identities end up in logs and tracebacks.
        return f"<{type(self).__name__} for {self.to_recipient().encode()[:24]}…>"


def check_wrapped_body(stanza: Stanza) -> None:
    """Refuse a body that is not exactly one wrapped 16-byte file key, before decrypting it.

    The spec requires this check first, against partitioning-oracle attacks; it also refuses
    longer file keys (`*_long_file_key` vectors).
    """
    if len(stanza.body) != WRAPPED_FILE_KEY_SIZE:
        raise HeaderError(
            f"age {stanza.type} stanza: body is {len(stanza.body)} bytes, expected "
            f"{WRAPPED_FILE_KEY_SIZE} (a {FILE_KEY_SIZE}-byte file key and its tag)",
            hint="the file is malformed or was made by an incompatible tool",
        )


def stanza_error(stanza_type: str, what: str) -> HeaderError:
    return HeaderError(
        f"age {stanza_type} stanza: {what}",
        hint="the file is malformed or was made by an incompatible tool",
    )


def check_arg_count(stanza: Stanza, count: int) -> None:
    if len(stanza.args) != count:
        plural = "argument" if count == 1 else "arguments"
        raise stanza_error(stanza.type, f"expected {count} {plural}, found {len(stanza.args)}")


def arg_bytes(stanza: Stanza, index: int, name: str, size: int) -> bytes:
    """Argument `index` of `stanza`, canonical base64 of exactly `size` bytes (its `name` is
    what an error calls it)."""
    try:
        value = b64decode(stanza.args[index])
    except ValueError as e:
        raise stanza_error(stanza.type, f"{name} is not canonical base64 ({e})") from None
    if len(value) != size:
        raise stanza_error(stanza.type, f"{name} is {len(value)} bytes, expected {size}")
    return value


def decode_recipient(text: str, hrp: str, label: str) -> bytes:
    """The key bytes of a Bech32 recipient string (lowercase, starting with `hrp` + "1"), or a
    RecipientError naming `label` (e.g. "age X25519 recipient")."""
    return _decode_key(text, hrp, label, RecipientError, upper=False)


def decode_identity(text: str, hrp: str, label: str) -> bytes:
    """The secret bytes of a Bech32 identity string (uppercase, starting with `hrp` + "1"), or
    an IdentityError naming `label`. Its messages never contain the string itself."""
    return _decode_key(text, hrp, label, IdentityError, upper=True)


def _decode_key(text: str, hrp: str, label: str, error: type[AgeError], *, upper: bool) -> bytes:
    prefix = hrp.upper() + "1" if upper else hrp + "1"
    hint = f"copy the whole {prefix}… string again" + (" from the identity file" if upper else "")
    try:
        found, data = bech32.decode(text)
    except ValueError as e:
        raise error(f"{label}: not valid Bech32 ({e})", hint=hint) from None
    cased = text.upper() if upper else text.lower()
    if found != hrp.lower() or text != cased:
        case = "an uppercase" if upper else "a lowercase"
        raise error(f"{label}: expected {case} string starting with '{prefix}'", hint=hint)
    return data
