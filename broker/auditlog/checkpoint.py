"""Checkpoints of the audit log: C2SP tlog-checkpoint bodies in C2SP signed-note envelopes. Pure.

    example.org/escrow          <- origin (also the signing key's name)
    1234                        <- tree size
    mY0fG1...=                  <- base64 root hash
                                <- blank line
    — example.org/escrow AbCd...<- em dash, key name, base64(key id || Ed25519 signature)

The broker's private key stays with its key custody: this module builds the body to sign and
wraps a signature made elsewhere, and verifies with a public "verifier key" string. Specs:
https://c2sp.org/signed-note and https://c2sp.org/tlog-checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_TYPE_ED25519 = 0x01  # signed-note "Signature types": hashed into the key id
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
KEY_ID_SIZE = 4  # signed-note: a 32-bit identifier, not a strong hash; the key itself decides
ROOT_SIZE = 32  # SHA-256
MAX_TREE_SIZE = 2**64 - 1  # tree sizes are uint64 in every tlog implementation
MAX_SIGNATURES = 64  # signed-note: verifiers SHOULD cap the count and MUST accept at least 16
SIGNATURE_LINE_START = "\u2014 "  # em dash (U+2014) and a space, not a hyphen
TREE_SIZE = re.compile(r"0|[1-9][0-9]*")  # ASCII decimal, no leading zeros
KEY_ID_HEX = re.compile(r"[0-9a-fA-F]{8}")


class CheckpointError(ValueError):
    """A checkpoint, note or verifier key is malformed, or is not signed by the expected key."""


@dataclass(frozen=True)
class VerifierKey:
    """An Ed25519 signed-note verifier key: `<name>+<hex key id>+<base64(0x01 || key)>`."""

    name: str
    key_id: bytes
    public_key: bytes

    def __str__(self) -> str:
        return format_verifier_key(self.name, self.public_key)


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    text: str  # the whole signed note, as received or produced


# --- keys -----------------------------------------------------------------------------------


def note_key_id(name: str, public_key: bytes) -> bytes:
    """signed-note: SHA-256(key name || 0x0A || 0x01 || Ed25519 public key)[:4]."""
    _check_key_name(name)
    _check_length("Ed25519 public key", public_key, ED25519_PUBLIC_KEY_SIZE)
    typed_key = bytes([SIGNATURE_TYPE_ED25519]) + public_key
    return hashlib.sha256(name.encode() + b"\n" + typed_key).digest()[:KEY_ID_SIZE]


def format_verifier_key(name: str, public_key: bytes) -> str:
    key_id = note_key_id(name, public_key)
    encoded = _b64(bytes([SIGNATURE_TYPE_ED25519]) + public_key)
    return f"{name}+{key_id.hex()}+{encoded}"


def parse_verifier_key(text: str) -> VerifierKey:
    """Parse `<name>+<key id>+<key>`, checking that the key id belongs to the key."""
    parts = text.strip().split("+", 2)  # base64 may itself contain "+", names and ids may not
    if len(parts) != 3:
        raise CheckpointError(f"verifier key: want <name>+<key id>+<key>, got {text!r}")
    name, key_id_hex, encoded = parts
    _check_key_name(name, what="verifier key: name")
    if not KEY_ID_HEX.fullmatch(key_id_hex):
        raise CheckpointError(f"verifier key: key id {key_id_hex!r} is not 8 hex digits")
    typed_key = _b64decode("verifier key: key", encoded)
    if typed_key[:1] != bytes([SIGNATURE_TYPE_ED25519]):
        raise CheckpointError(
            f"verifier key: signature type {typed_key[:1].hex() or 'missing'} is not supported, "
            f"want {SIGNATURE_TYPE_ED25519:02x} (Ed25519)"
        )
    public_key = typed_key[1:]
    _check_length("verifier key: Ed25519 public key", public_key, ED25519_PUBLIC_KEY_SIZE)
    key_id = bytes.fromhex(key_id_hex)
    if key_id != note_key_id(name, public_key):
        raise CheckpointError(
            f"verifier key: key id {key_id.hex()} does not belong to this name and key, "
            f"want {note_key_id(name, public_key).hex()}"
        )
    return VerifierKey(name=name, key_id=key_id, public_key=public_key)


# --- writing --------------------------------------------------------------------------------


def checkpoint_body(origin: str, size: int, root: bytes) -> bytes:
    """The note text to sign: `<origin>\\n<size>\\n<base64 root>\\n` (tlog-checkpoint)."""
    if not origin or "\n" in origin:
        raise CheckpointError(f"checkpoint: origin must be one non-empty line, got {origin!r}")
    _check_note_characters("checkpoint: origin", origin)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_TREE_SIZE:
        raise CheckpointError(f"checkpoint: tree size must be in 0..2^64-1, got {size!r}")
    _check_length("checkpoint: root hash", root, ROOT_SIZE)
    return f"{origin}\n{size}\n{_b64(root)}\n".encode()


def format_note(body: bytes, name: str, key_id: bytes, signature: bytes) -> str:
    """The signed note: `body`, a blank line, and one signature line by key `name`."""
    text = _decode_note_text(body)
    if not text.endswith("\n") or text == "\n":
        raise CheckpointError("note: text must be non-empty and end with a newline")
    _check_key_name(name)
    _check_length("note: key id", key_id, KEY_ID_SIZE)
    _check_length("note: Ed25519 signature", signature, ED25519_SIGNATURE_SIZE)
    return f"{text}\n{SIGNATURE_LINE_START}{name} {_b64(key_id + signature)}\n"


# --- reading --------------------------------------------------------------------------------


def parse_note(text: str) -> tuple[str, list[NoteSignature]]:
    """(note text, signatures) of a signed note. Structure only: nothing is verified."""
    _check_note_characters("note", text)
    separator = text.rfind("\n\n")  # signed-note: the *last* blank line ends the text
    if separator < 0:
        raise CheckpointError("note: no blank line between the text and the signatures")
    body, signature_block = text[: separator + 1], text[separator + 2 :]
    if not signature_block.endswith("\n"):
        raise CheckpointError("note: no signature lines, or the last one lacks its newline")
    lines = signature_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"note: {len(lines)} signatures, at most {MAX_SIGNATURES} allowed")
    return body, [_parse_signature_line(line) for line in lines]


def parse_checkpoint(text: str) -> Checkpoint:
    """Read a checkpoint's structure WITHOUT verifying it: use `verify_checkpoint` for anything
    you act on (signed-note: the text must be ignored until a trusted signature verifies)."""
    body, _ = parse_note(text)
    return _parse_body(body, text)


def verify_checkpoint(text: str, verifier_key: str | VerifierKey) -> Checkpoint:
    """The checkpoint in `text`, if it is signed by `verifier_key` and its origin is that key's
    name; otherwise CheckpointError. Signatures by other keys are ignored (signed-note)."""
    key = parse_verifier_key(verifier_key) if isinstance(verifier_key, str) else verifier_key
    body, signatures = parse_note(text)
    checkpoint = _parse_body(body, text)
    ours = [s for s in signatures if (s.name, s.key_id) == (key.name, key.key_id)]
    if not ours:
        raise CheckpointError(
            f"checkpoint is not signed by {key.name}+{key.key_id.hex()} "
            f"(signed by: {_describe(signatures)})"
        )
    # signed-note: a signature from a known key that fails to verify rejects the whole note,
    # so every matching line must verify, not just one.
    for signature in ours:
        _verify_ed25519(key, signature.signature, body.encode())
    if checkpoint.origin != key.name:
        raise CheckpointError(
            f"checkpoint origin {checkpoint.origin!r} does not match verifier key name {key.name!r}"
        )
    return checkpoint


def _parse_body(body: str, text: str) -> Checkpoint:
    lines = body[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise CheckpointError(
            "checkpoint: want non-empty lines origin, tree size, root hash (then extensions), "
            f"got {len(lines)} lines{' with an empty one' if not all(lines) else ''}"
        )
    origin, size_text, root_text = lines[:3]  # extension lines after these are allowed, unused
    if not TREE_SIZE.fullmatch(size_text) or int(size_text) > MAX_TREE_SIZE:
        raise CheckpointError(f"checkpoint: tree size {size_text!r} is not a decimal uint64")
    root = _b64decode("checkpoint: root hash", root_text)
    _check_length("checkpoint: root hash", root, ROOT_SIZE)
    return Checkpoint(origin=origin, size=int(size_text), root=root, text=text)


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_LINE_START):
        raise CheckpointError(f"note: signature line must start with an em dash: {line!r}")
    fields = line[len(SIGNATURE_LINE_START) :].split(" ")
    if len(fields) != 2:
        raise CheckpointError(f"note: want '— <key name> <base64 signature>', got {line!r}")
    name, encoded = fields
    _check_key_name(name, what="note: key name")
    raw = _b64decode("note: signature", encoded)
    if len(raw) <= KEY_ID_SIZE:
        raise CheckpointError(f"note: signature by {name} is {len(raw)} bytes, too short")
    return NoteSignature(name=name, key_id=raw[:KEY_ID_SIZE], signature=raw[KEY_ID_SIZE:])


def _verify_ed25519(key: VerifierKey, signature: bytes, message: bytes) -> None:
    signer = f"{key.name}+{key.key_id.hex()}"
    if len(signature) != ED25519_SIGNATURE_SIZE:
        raise CheckpointError(
            f"checkpoint signature by {signer} does not verify: "
            f"{len(signature)} bytes, want {ED25519_SIGNATURE_SIZE}"
        )
    try:
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise CheckpointError(f"checkpoint signature by {signer} does not verify") from None


# --- checks and encodings -------------------------------------------------------------------


def _check_key_name(name: str, what: str = "note: key name") -> None:
    # signed-note: non-empty, no Unicode spaces, no "+" (it separates a verifier key's fields)
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise CheckpointError(f"{what} {name!r} must be non-empty without spaces or '+'")
    _check_note_characters(what, name)


def _check_note_characters(what: str, text: str) -> None:
    # signed-note: valid UTF-8 and no ASCII control characters other than newline
    bad = next((ch for ch in text if ch < " " and ch != "\n"), None)
    if bad is not None:
        raise CheckpointError(f"{what}: control character {bad!r} is not allowed")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise CheckpointError(f"{what}: not valid UTF-8 (lone surrogate)") from None


def _decode_note_text(body: bytes) -> str:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise CheckpointError("note: text is not valid UTF-8") from None
    _check_note_characters("note: text", text)
    return text


def _check_length(what: str, value: bytes, want: int) -> None:
    if len(value) != want:
        raise CheckpointError(f"{what} is {len(value)} bytes, want {want}")


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _b64decode(what: str, text: str) -> bytes:
    """Standard base64 with padding, and only its one canonical spelling (RFC 4648 §3.5)."""
    try:
        value = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"{what}: {text!r} is not standard base64") from None
    if _b64(value) != text:
        raise CheckpointError(f"{what}: {text!r} is not canonical base64")
    return value


def _describe(signatures: Sequence[NoteSignature]) -> str:
    return ", ".join(f"{s.name}+{s.key_id.hex()}" for s in signatures) or "nobody"
