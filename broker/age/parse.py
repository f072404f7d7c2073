"""Recipient strings and identity files to Recipient / Identity objects.

Error messages never repeat the input: a user may paste a secret key where a public key was
expected, and messages end up in logs.
"""

from __future__ import annotations

import functools

from broker.age import bech32
from broker.age.errors import IdentityError, RecipientError, UnsupportedIdentity
from broker.age.hybrid import IDENTITY_HRP as HYBRID_IDENTITY_HRP
from broker.age.hybrid import RECIPIENT_HRP as HYBRID_RECIPIENT_HRP
from broker.age.hybrid import HybridIdentity, HybridRecipient
from broker.age.interfaces import Identity, Recipient
from broker.age.ssh import OPENSSH_PRIVATE_KEY_BEGIN, SSHEd25519Identity, SSHEd25519Recipient
from broker.age.x25519 import IDENTITY_HRP as X25519_IDENTITY_HRP
from broker.age.x25519 import RECIPIENT_HRP as X25519_RECIPIENT_HRP
from broker.age.x25519 import X25519Identity, X25519Recipient

_RECIPIENT_FORMS = "age1… (X25519), age1pq1… (post-quantum hybrid) or 'ssh-ed25519 AAAA…'"


@functools.lru_cache(maxsize=1024)
def parse_recipient(text: str) -> Recipient:
    """Parse one recipient: `age1…`, `age1pq1…`, or an OpenSSH `ssh-ed25519 …` line.

    Remembered: every key release parses its grant's recipient (public; ~0.7 ms for a hybrid
    one), and recipients do not change."""
    text = text.strip()
    if text.startswith("ssh-ed25519 "):
        return SSHEd25519Recipient.parse(text)
    if text.startswith("ssh-"):
        raise RecipientError(
            f"age recipient: SSH key type {text.split(None, 1)[0][:32]!r} is not supported",
            hint="use an ssh-ed25519 key (ssh-keygen -t ed25519) or an age1… recipient",
        )
    if text.upper().startswith("AGE-SECRET-KEY-"):
        raise RecipientError(
            "age recipient: this is a secret key (identity), not a recipient",
            hint="give the public key instead (age-keygen -y prints it); keep the secret "
            "key private",
        )
    if text.lower().startswith("age1"):
        hrp = text[: text.rfind("1")].lower()  # the type; its own parser checks the rest
        if hrp == HYBRID_RECIPIENT_HRP:
            return HybridRecipient.parse(text)
        if hrp == X25519_RECIPIENT_HRP:
            return X25519Recipient.parse(text)
        try:
            hrp, _ = bech32.decode(text)
        except ValueError as e:
            raise RecipientError(
                f"age recipient: not valid Bech32 ({e})",
                hint="copy the recipient again; it may be truncated or mistyped",
            ) from None
        raise RecipientError(
            f"age recipient: type {hrp!r} (plugin or hardware-key recipient) is not supported",
            hint=f"give {_RECIPIENT_FORMS}",
        )
    raise RecipientError(
        "age recipient: not a recognised recipient", hint=f"give {_RECIPIENT_FORMS}"
    )


def parse_recipients(text: str) -> list[Recipient]:
    """Parse a recipients file: one recipient per line, `#` comments and blank lines allowed."""
    recipients: list[Recipient] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            recipients.append(parse_recipient(line))
        except RecipientError as e:
            raise RecipientError(f"line {number}: {e.message}", hint=e.hint) from None
    if not recipients:
        raise RecipientError(
            "age recipients file: no recipients found", hint=f"give {_RECIPIENT_FORMS}"
        )
    return recipients


def parse_identity(text: str) -> Identity:
    """Parse one identity string (`AGE-SECRET-KEY-1…` or `AGE-SECRET-KEY-PQ-1…`)."""
    text = text.strip()
    upper = text.upper()
    if upper.startswith(HYBRID_IDENTITY_HRP + "1"):
        return HybridIdentity.parse(text)
    if upper.startswith(X25519_IDENTITY_HRP + "1"):
        return X25519Identity.parse(text)
    if upper.startswith("AGE-PLUGIN-"):
        raise UnsupportedIdentity(
            "age identity: plugin identities are not supported",
            hint="use a native age identity (AGE-SECRET-KEY-1… or AGE-SECRET-KEY-PQ-1…)",
        )
    raise IdentityError(
        "age identity: not a recognised identity",
        hint="give an AGE-SECRET-KEY-1… or AGE-SECRET-KEY-PQ-1… line",
    )


def parse_identities(text: str) -> list[Identity]:
    """Parse an identity file: age identities (one per line, `#` comments and blank lines
    allowed), or an unencrypted OpenSSH ed25519 private key file."""
    if OPENSSH_PRIVATE_KEY_BEGIN in text:
        return [SSHEd25519Identity.parse(text)]
    if "-----BEGIN" in text:
        raise UnsupportedIdentity(
            "age identity file: PEM private keys other than OpenSSH ed25519 are not supported",
            hint="use an age identity file or an ssh-keygen -t ed25519 private key",
        )
    identities: list[Identity] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(parse_identity(line))
        except IdentityError as e:
            raise type(e)(f"line {number}: {e.message}", hint=e.hint) from None
    if not identities:
        raise IdentityError(
            "age identity file: no identities found",
            hint="the file should contain AGE-SECRET-KEY-1… or AGE-SECRET-KEY-PQ-1… lines",
        )
    return identities


def generate_x25519_identity() -> X25519Identity:
    return X25519Identity.generate()


def generate_hybrid_identity() -> HybridIdentity:
    return HybridIdentity.generate()
