"""Errors of the age format, one class per failure kind of the age testkit.

The kinds matter to callers: a `HeaderError` means the file is malformed, `NoIdentityMatched`
means the key is wrong (or the file is for someone else), `HeaderMACError` means the header was
altered after it was made, `PayloadError` means the encrypted body is damaged or truncated, and
`ArmorError` means the PEM text around the file is malformed. Messages say what was wrong and
what to do; they never contain key material, passphrases or plaintext.
"""

from __future__ import annotations

from collections.abc import Iterable

from broker.errors import InvalidInput


class AgeError(InvalidInput):
    """Base of every age format error."""

    title = "invalid age data"


class HeaderError(AgeError):
    """The header (or a stanza in it, or the payload nonce after it) is malformed."""

    title = "malformed age header"


class NoIdentityMatched(AgeError):
    """No stanza in the header could be opened with the identities given."""

    title = "no matching age identity"

    def __init__(self, stanza_types: Iterable[str], identity_types: Iterable[str]) -> None:
        self.stanza_types = tuple(stanza_types)
        self.identity_types = tuple(identity_types)
        stanzas = ", ".join(self.stanza_types) or "none"
        identities = ", ".join(self.identity_types) or "none"
        super().__init__(
            f"age header: no identity matched; the file has stanzas of type [{stanzas}], "
            f"tried identities of type [{identities}]",
            hint="decrypt with the identity (private key) the file was encrypted to",
        )


class HeaderMACError(AgeError):
    """The file key was unwrapped but the header MAC does not match: the header was altered."""

    title = "age header authentication failed"


class PayloadError(AgeError):
    """The STREAM payload is damaged, truncated or has data after its final chunk."""

    title = "age payload authentication failed"


class ArmorError(AgeError):
    """The ASCII armor (PEM) around an age file is malformed."""

    title = "malformed age armor"


class RecipientError(AgeError):
    """A recipient string or recipient set was refused."""

    title = "invalid age recipient"


class IdentityError(AgeError):
    """An identity (private key) string or file was refused."""

    title = "invalid age identity"


class UnsupportedIdentity(IdentityError):
    """An identity file that is well formed but of a kind this implementation does not use."""

    title = "unsupported age identity"
