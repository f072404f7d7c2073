"""The `ssh-ed25519` recipient type: reuse an OpenSSH Ed25519 key with age.

Not in the C2SP spec text; defined by FiloSottile/age (agessh). The Ed25519 key is mapped to
X25519 (birational map for the public key, SHA-512 of the seed for the secret), and the wrap is
X25519 with a tweak bound to the SSH public key:

    tag          = SHA-256(ssh wire public key)[:4]
    tweak        = HKDF-SHA-256(ikm = "", salt = ssh wire public key, info = label)
    shared       = X25519(tweak, X25519(ephemeral secret, recipient))
    wrap key     = HKDF-SHA-256(ikm = shared, salt = ephemeral share || recipient, info = label)
    stanza       = -> ssh-ed25519 <tag> <ephemeral share>, body = ChaCha20-Poly1305(file key)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker.age.errors import IdentityError, RecipientError, UnsupportedIdentity
from broker.age.header import Stanza
from broker.age.interfaces import (
    Identity,
    Recipient,
    arg_bytes,
    check_arg_count,
    check_wrapped_body,
    stanza_error,
)
from broker.age.primitives import aead_unwrap, b64encode, hkdf_sha256
from broker.age.x25519 import POINT_SIZE, wrap_with_share, x25519

STANZA_TYPE = "ssh-ed25519"
SSH_ED25519_LABEL = b"age-encryption.org/v1/ssh-ed25519"
SSH_KEY_TYPE = b"ssh-ed25519"
TAG_SIZE = 4
OPENSSH_PRIVATE_KEY_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"


def _wire_public_key(raw: bytes) -> bytes:
    """The SSH wire encoding: string "ssh-ed25519", string key (RFC 8709)."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in (SSH_KEY_TYPE, raw))


def _tag(wire: bytes) -> str:
    # Why a tag: the identity can skip stanzas for other SSH keys without trying them.
    return b64encode(hashlib.sha256(wire).digest()[:TAG_SIZE])


def _tweak(wire: bytes) -> bytes:
    # Why a tweak: binds the shared secret to this exact SSH public key, so a stanza can not be
    # moved to another key that maps to the same X25519 point.
    return hkdf_sha256(b"", salt=wire, info=SSH_ED25519_LABEL)


def _bad_recipient(what: str) -> RecipientError:
    return RecipientError(
        f"age ssh-ed25519 recipient: {what}",
        hint="give one line of an OpenSSH public key file, like 'ssh-ed25519 AAAAC3Nza… comment'",
    )


class SSHEd25519Recipient(Recipient):
    stanza_type = STANZA_TYPE

    def __init__(self, public_key: bytes, comment: str = "") -> None:
        if len(public_key) != 32:
            raise _bad_recipient(f"public key is {len(public_key)} bytes, expected 32")
        try:
            self._x25519 = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(bytes(public_key))
        except nacl.exceptions.CryptoError:
            raise _bad_recipient("the Ed25519 public key is not a valid point") from None
        self.public_key = bytes(public_key)
        self.comment = comment
        self._wire = _wire_public_key(self.public_key)

    @classmethod
    def parse(cls, text: str) -> SSHEd25519Recipient:
        fields = text.strip().split(None, 2)
        if len(fields) < 2 or fields[0] != STANZA_TYPE:
            raise _bad_recipient("expected 'ssh-ed25519 <base64 key> [comment]'")
        try:
            wire = base64.b64decode(fields[1], validate=True)
        except binascii.Error:
            raise _bad_recipient("the key is not valid base64") from None
        try:
            key = serialization.load_ssh_public_key(f"{fields[0]} {fields[1]}".encode())
        except (ValueError, UnsupportedAlgorithm):
            raise _bad_recipient("the key is not a valid OpenSSH Ed25519 public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise _bad_recipient("the key is not an Ed25519 key")
        recipient = cls(key.public_bytes_raw(), fields[2] if len(fields) > 2 else "")
        if wire != recipient._wire:
            raise _bad_recipient("the key blob is not in canonical SSH wire format")
        return recipient

    def encode(self) -> str:
        line = f"{STANZA_TYPE} {base64.b64encode(self._wire).decode()}"
        return f"{line} {self.comment}" if self.comment else line

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SSHEd25519Recipient) and other.public_key == self.public_key

    def __hash__(self) -> int:
        return hash((SSHEd25519Recipient, self.public_key))

    def wrap(self, file_key: bytes) -> list[Stanza]:
        share, body = wrap_with_share(
            file_key, self._x25519, SSH_ED25519_LABEL, tweak=_tweak(self._wire)
        )
        return [Stanza(STANZA_TYPE, (self.tag, b64encode(share)), body)]

    @property
    def tag(self) -> str:
        """The first argument of every stanza wrapped to this key (public, 4 bytes)."""
        return _tag(self._wire)


class SSHEd25519Identity(Identity):
    stanza_type = STANZA_TYPE

    def __init__(self, private_key: Ed25519PrivateKey, text: str | None = None) -> None:
        self._key = private_key
        seed = private_key.private_bytes_raw()
        public = private_key.public_key().public_bytes_raw()
        self._recipient = SSHEd25519Recipient(public)
        # libsodium: SHA-512(seed)[:32], clamped; X25519 clamps anyway, as age's agessh relies on.
        self._secret = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(seed + public)
        self._public_x25519 = (
            X25519PrivateKey.from_private_bytes(self._secret).public_key().public_bytes_raw()
        )
        self._text = text

    @classmethod
    def parse(cls, text: str) -> SSHEd25519Identity:
        if OPENSSH_PRIVATE_KEY_BEGIN not in text:
            raise IdentityError(
                "age ssh identity: not an OpenSSH private key file",
                hint="give the private key file made by ssh-keygen -t ed25519",
            )
        try:
            key = serialization.load_ssh_private_key(text.encode(), password=None)
        except TypeError:
            raise UnsupportedIdentity(
                "age ssh identity: the OpenSSH private key is protected by a passphrase, "
                "which is not supported",
                hint="use a native age identity, or an unencrypted copy of the key kept "
                "on an encrypted disk",
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise IdentityError(
                "age ssh identity: the OpenSSH private key file is malformed",
                hint="give the private key file made by ssh-keygen -t ed25519",
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise UnsupportedIdentity(
                "age ssh identity: only ssh-ed25519 SSH keys are supported",
                hint="generate a key with ssh-keygen -t ed25519, or use a native age identity",
            )
        return cls(key, text)

    def encode(self) -> str:
        if self._text is not None:
            return self._text
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()

    def to_recipient(self) -> SSHEd25519Recipient:
        return self._recipient

    def unwrap_stanza(self, stanza: Stanza) -> bytes | None:
        if stanza.type != STANZA_TYPE:
            return None
        check_arg_count(stanza, 2)
        share = arg_bytes(stanza, 1, "share", POINT_SIZE)
        wire = self._recipient._wire
        if not hmac.compare_digest(stanza.args[0].encode(), _tag(wire).encode()):
            return None  # addressed to another SSH key
        check_wrapped_body(stanza)
        try:
            shared = x25519(self._secret, share)
            shared = x25519(_tweak(wire), shared)
        except ValueError:
            raise stanza_error(STANZA_TYPE, "share is a low-order point") from None
        wrap_key = hkdf_sha256(shared, salt=share + self._public_x25519, info=SSH_ED25519_LABEL)
        return aead_unwrap(wrap_key, stanza.body)
