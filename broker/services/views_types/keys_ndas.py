"""Researchers' keys and NDAs."""

from __future__ import annotations

from typing import Literal, NotRequired

from typing_extensions import TypedDict

KeyState = Literal["pending", "proven", "retired"]
KeyType = Literal["x25519", "mlkem768x25519", "ssh-ed25519"]


class KeyView(TypedDict):
    """A researcher's key."""

    id: str
    type: KeyType
    recipient: str
    fingerprint: str
    label: str
    state: KeyState
    created_at: str
    proven_at: str | None
    retired_at: str | None
    challenge_expires_at: str | None
    challenge: NotRequired[str | None]
    """armored age file (pending keys)"""


class KeyList(TypedDict):
    keys: list[KeyView]


# --- NDAs -------------------------------------------------------------------------------------


class NdaTextView(TypedDict):
    id: str
    version: str
    title: str
    organisation: str
    sha256: str
    size: int
    text: NotRequired[str]
    """the file's exact content, front matter included"""


class NdaVersion(TypedDict):
    version: str
    sha256: str


class NdaSummary(TypedDict):
    """An NDA with its latest version and the hashes of all versions."""

    id: str
    version: str
    title: str
    organisation: str
    sha256: str
    size: int
    latest_version: str
    versions: list[NdaVersion]


class NdaList(TypedDict):
    ndas: list[NdaSummary]


class NdaSignatureView(TypedDict):
    """A signature as its signer sees it, with what an auditor needs to re-verify the SSH
    signature offline."""

    id: str
    nda: str
    version: str
    sha256: str
    signed_at: str
    ssh_signature: str | None
    ssh_key: str | None
    ssh_public_key: NotRequired[str]
    ssh_key_fingerprint: NotRequired[str]
    allowed_signers: NotRequired[str]
    verify_command: NotRequired[str]
    created: NotRequired[bool]
    """when just signed: true if new, false if this text was signed already"""


class NdaSignatureList(TypedDict):
    signatures: list[NdaSignatureView]
