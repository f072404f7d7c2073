"""Deposits: their state, files, uploads and parts."""

from __future__ import annotations

from typing_extensions import TypedDict

from broker.domain.states import DepositState


class VerificationView(TypedDict):
    """The deposit's newest verification job."""

    state: str
    attempts: int
    error: str | None
    next_attempt_at: str | None
    worker: str | None
    heartbeat_at: str | None


class DepositFileView(TypedDict):
    index: int
    path: str
    size: int
    state: str
    sha256: str | None
    error: str | None


class DepositView(TypedDict):
    """A deposit of a model version and its files."""

    deposit_id: str
    model: str
    version: str
    state: DepositState
    recipient: str
    recipient_type: str
    classical: bool
    created_at: str
    sealed_at: str | None
    last_verified_at: str | None
    failure: str | None
    failure_hint: str | None
    verification: VerificationView | None
    files: list[DepositFileView]
    quarantined_at: str | None
    """set while an operator quarantines the version: no key release, no new request"""
    quarantine_reason: str | None


class PresignedPart(TypedDict):
    number: int
    method: str
    url: str
    headers: dict[str, str]
    expires_at: str


class UploadedPartView(TypedDict):
    number: int
    size: int
    etag: str


class UploadStart(TypedDict):
    index: int
    path: str
    state: str
    part_size: int
    payload_size: int
    header_registered: bool
    parts: list[UploadedPartView]
    """the parts the store holds already"""
    upload: str | None
    """a short reference of the store's upload (not its id)"""
    upload_lost: bool
    """the store no longer knew the old upload: encrypt the file again under a new key"""


class PresignedParts(TypedDict):
    parts: list[PresignedPart]


class HeaderRegistered(TypedDict):
    index: int
    header_registered: bool
    classical: bool


class FileCompleted(TypedDict):
    index: int
    state: str
