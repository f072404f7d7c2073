"""The audit log: events, checkpoints, proofs, raw entries."""

from __future__ import annotations

from typing import Any

from typing_extensions import TypedDict


class AuditActor(TypedDict):
    kind: str
    id: str


class AuditEventView(TypedDict):
    """An event as its leaf says it, plus the leaf's exact bytes and its hash."""

    seq: int
    time: str
    action: str
    actor: AuditActor
    subject: dict[str, Any]
    details: dict[str, Any]
    leaf: str
    """base64 of exactly the bytes hashed"""
    leaf_hash: str


class AuditEventPage(TypedDict):
    events: list[AuditEventView]
    next_before: int | None


class Checkpoint(TypedDict):
    size: int
    note: str


class ConsistencyProof(TypedDict):
    first: int
    second: int
    proof: list[str]
    """base64 SHA-256 node hashes"""


class InclusionProof(TypedDict):
    seq: int
    size: int
    leaf_hash: str
    proof: list[str]
    """base64 SHA-256 node hashes"""
    checkpoint: str


class RawEntry(TypedDict):
    seq: int
    leaf: str
    leaf_hash: str


class RawEntries(TypedDict):
    entries: list[RawEntry]
