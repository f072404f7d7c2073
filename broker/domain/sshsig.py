"""SSH signatures (`ssh-keygen -Y sign`), verified without ssh-keygen. Pure.

The format is OpenSSH's PROTOCOL.sshsig. The armored file holds one blob:

    byte[6]   MAGIC_PREAMBLE "SSHSIG"
    uint32    SIG_VERSION 1
    string    publickey            SSH wire public key of the signer
    string    namespace            what the signature is for ("escrow-nda")
    string    reserved             ignored, but signed
    string    hash_algorithm       "sha256" or "sha512"
    string    signature            SSH signature blob: string "ssh-ed25519", string sig[64]

and the signer signed, not the message itself, but

    byte[6]   MAGIC_PREAMBLE
    string    namespace
    string    reserved
    string    hash_algorithm
    string    H(message)

Why the namespace matters: a signature made for one purpose ("file", "git") must not be
accepted for another; ours is `escrow-nda`, so a signed git commit can not be replayed as
the acceptance of an NDA. Only Ed25519 signers are accepted: researchers' ssh keys are
registered as `ssh-ed25519` (the age recipient type), so that is the only key we could
match a signature against anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.errors import InvalidInput

MAGIC_PREAMBLE = b"SSHSIG"
SIG_VERSION = 1
ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"
ARMOR_LINE_LENGTH = 70  # what ssh-keygen writes; we accept any length when reading
HASH_ALGORITHMS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
SSH_ED25519 = "ssh-ed25519"
ED25519_KEY_SIZE = 32
ED25519_SIG_SIZE = 64
NDA_NAMESPACE = "escrow-nda"
AGREEMENT_NAMESPACE = "escrow-agreement"  # trustees' votes on release agreements
CLOSEOUT_NAMESPACE = "escrow-closeout"  # a researcher's close-out of an ended grant
MAX_SIGNATURE_TEXT = 4096  # an armored Ed25519 SSHSIG is ~300 bytes; refuse anything huge

SIGN_HINT = (
    "sign the exact NDA file with: ssh-keygen -Y sign -n escrow-nda -f ~/.ssh/id_ed25519 "
    "NDA.md (escrow nda sign --ssh-key does this)"
)


class SshSignatureError(InvalidInput):
    """An SSH signature is malformed, for another purpose, or does not verify."""

    title = "invalid ssh signature"


@dataclass(frozen=True)
class SshSignature:
    public_key: bytes  # SSH wire encoding: string "ssh-ed25519", string key[32]
    namespace: str
    reserved: bytes
    hash_algorithm: str
    signature: bytes  # raw Ed25519 signature, 64 bytes

    @property
    def raw_public_key(self) -> bytes:
        return _read_ed25519_public_key(self.public_key)

    @property
    def fingerprint(self) -> str:
        return ssh_fingerprint(self.public_key)

    def public_key_line(self) -> str:
        """The signer as an OpenSSH public key line (`ssh-ed25519 AAAA…`)."""
        return f"{SSH_ED25519} {base64.b64encode(self.public_key).decode()}"


def ssh_fingerprint(wire: bytes) -> str:
    """The key's fingerprint as `ssh-keygen -l` prints it: SHA256:<base64, no padding>."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(wire).digest()).decode().rstrip("=")


def signed_data(namespace: str, reserved: bytes, hash_algorithm: str, message: bytes) -> bytes:
    """What an SSHSIG signer actually signs (PROTOCOL.sshsig, "Signed Data")."""
    digest = HASH_ALGORITHMS[hash_algorithm](message).digest()
    return (
        MAGIC_PREAMBLE
        + _string(namespace.encode())
        + _string(reserved)
        + _string(hash_algorithm.encode())
        + _string(digest)
    )


def parse_armored(text: str) -> SshSignature:
    """Parse an armored SSH signature (the `.sig` file ssh-keygen writes)."""
    if len(text) > MAX_SIGNATURE_TEXT:
        raise _malformed(f"is {len(text)} characters long, more than an Ed25519 signature")
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != ARMOR_BEGIN or lines[-1] != ARMOR_END:
        raise _malformed(f"is not armored: expected {ARMOR_BEGIN!r} … {ARMOR_END!r}")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error:
        raise _malformed("is not valid base64 between the armor lines") from None
    return parse_blob(blob)


def parse_blob(blob: bytes) -> SshSignature:
    reader = _Reader(blob)
    if reader.take(len(MAGIC_PREAMBLE)) != MAGIC_PREAMBLE:
        raise _malformed("does not start with the SSHSIG magic")
    version = reader.uint32()
    if version != SIG_VERSION:
        raise _malformed(f"has version {version}, expected {SIG_VERSION}")
    public_key = reader.string()
    namespace_bytes = reader.string()
    reserved = reader.string()
    hash_bytes = reader.string()
    signature_blob = reader.string()
    reader.end()
    try:
        namespace, hash_algorithm = namespace_bytes.decode(), hash_bytes.decode()
    except UnicodeDecodeError:
        raise _malformed("has a namespace or hash algorithm that is not text") from None
    if hash_algorithm not in HASH_ALGORITHMS:
        raise _malformed(f"uses hash algorithm {hash_algorithm[:32]!r}; expected sha256 or sha512")
    _read_ed25519_public_key(public_key)
    sig = _Reader(signature_blob)
    algorithm = sig.string()
    raw_signature = sig.string()
    sig.end()
    if algorithm != SSH_ED25519.encode():
        raise _malformed(
            f"is made with {algorithm[:32].decode(errors='replace')!r}; only ssh-ed25519 "
            "signatures are accepted"
        )
    if len(raw_signature) != ED25519_SIG_SIZE:
        raise _malformed(f"has a {len(raw_signature)}-byte Ed25519 signature, expected 64")
    return SshSignature(public_key, namespace, reserved, hash_algorithm, raw_signature)


def verify(signature: SshSignature, message: bytes, namespace: str) -> None:
    """Check the namespace, then the Ed25519 signature over `message`; raise if either fails.

    This says that the key in the signature signed `message`; whether that key belongs to
    the right person is the caller's question (compare `signature.public_key`).
    """
    if signature.namespace != namespace:
        raise SshSignatureError(
            f"ssh signature: made for namespace {signature.namespace[:64]!r}, expected "
            f"{namespace!r}",
            hint=SIGN_HINT,
        )
    data = signed_data(namespace, signature.reserved, signature.hash_algorithm, message)
    key = Ed25519PublicKey.from_public_bytes(signature.raw_public_key)
    try:
        key.verify(signature.signature, data)
    except InvalidSignature:
        raise SshSignatureError(
            f"ssh signature: does not verify over these {len(message)} bytes with key "
            f"{signature.fingerprint} (it was made over other bytes, or altered)",
            hint="sign the exact text the broker shows, unchanged; " + SIGN_HINT,
        ) from None


def armor(blob: bytes) -> str:
    """Armor an SSHSIG blob the way ssh-keygen does (so stored signatures look familiar)."""
    encoded = base64.b64encode(blob).decode()
    body = [encoded[i : i + ARMOR_LINE_LENGTH] for i in range(0, len(encoded), ARMOR_LINE_LENGTH)]
    return "\n".join([ARMOR_BEGIN, *body, ARMOR_END]) + "\n"


def encode_blob(signature: SshSignature) -> bytes:
    return (
        MAGIC_PREAMBLE
        + SIG_VERSION.to_bytes(4, "big")
        + _string(signature.public_key)
        + _string(signature.namespace.encode())
        + _string(signature.reserved)
        + _string(signature.hash_algorithm.encode())
        + _string(_string(SSH_ED25519.encode()) + _string(signature.signature))
    )


# --- SSH wire format (RFC 4251 §5) -------------------------------------------------------------


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _read_ed25519_public_key(wire: bytes) -> bytes:
    reader = _Reader(wire)
    key_type = reader.string()
    if key_type != SSH_ED25519.encode():
        raise _malformed(
            f"is made with a {key_type[:32].decode(errors='replace')!r} key; only ssh-ed25519 "
            "keys are accepted"
        )
    raw = reader.string()
    reader.end()
    if len(raw) != ED25519_KEY_SIZE:
        raise _malformed(f"has a {len(raw)}-byte Ed25519 public key, expected 32")
    return raw


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self._at + n > len(self._data):
            raise _malformed("is truncated")
        chunk = self._data[self._at : self._at + n]
        self._at += n
        return chunk

    def uint32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def string(self) -> bytes:
        return self.take(self.uint32())

    def end(self) -> None:
        if self._at != len(self._data):
            raise _malformed(f"has {len(self._data) - self._at} unexpected trailing bytes")


def _malformed(what: str) -> SshSignatureError:
    return SshSignatureError(f"ssh signature: {what}", hint=SIGN_HINT)
