"""Helpers shared by the age tests: testkit vector files and keys."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
VECTORS_DIR = TESTS_DIR / "vectors" / "age"

NOT_VECTORS = {"LICENSE", "README.md"}
KNOWN_KEYS = {
    "expect",
    "payload",
    "file key",
    "identity",
    "passphrase",
    "armored",
    "comment",
    "compressed",
}


@dataclass
class Vector:
    name: str
    expect: str
    payload_sha256: str | None
    file_key: bytes
    identities: list[str] = field(default_factory=list)
    passphrases: list[str] = field(default_factory=list)
    armored: bool = False
    data: bytes = b""


def vector_names() -> list[str]:
    return sorted(p.name for p in VECTORS_DIR.iterdir() if p.name not in NOT_VECTORS)


def load_vector(name: str) -> Vector:
    raw = (VECTORS_DIR / name).read_bytes()
    head, data = raw.split(b"\n\n", 1)
    fields: dict[str, list[str]] = {}
    for line in head.decode().split("\n"):
        key, value = line.split(": ", 1)
        # Upstream says to ignore files with unknown keys; we fail instead, so nothing is
        # skipped silently when the vectors are updated.
        assert key in KNOWN_KEYS, f"{name}: unknown vector key {key!r}"
        fields.setdefault(key, []).append(value)
    if fields.get("compressed") == ["zlib"]:
        data = zlib.decompress(data)
    return Vector(
        name=name,
        expect=fields["expect"][0],
        payload_sha256=fields.get("payload", [None])[0],
        file_key=bytes.fromhex(fields["file key"][0]),
        identities=fields.get("identity", []),
        passphrases=fields.get("passphrase", []),
        armored=fields.get("armored") == ["yes"],
        data=data,
    )


def ssh_ed25519_private_key_text() -> str:
    """A fresh unencrypted OpenSSH ed25519 private key file, made without ssh-keygen."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
