"""What a policy decision is made from and what it answers. Pure values, no I/O.

The services gather `Facts` from the database (the requester's verified claims, signatures,
proven keys, approvals so far); `evaluate(policy, facts)` turns them into a `Decision`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class KeyFact:
    key_id: str
    key_type: str  # "x25519" | "mlkem768x25519" | "ssh-ed25519"
    post_quantum: bool


@dataclass(frozen=True)
class ApprovalFact:
    reviewer_id: str
    reviewer_roles: frozenset[str]  # the reviewer's roles in the model's organisation
    reviewer_orgs: frozenset[str]  # every organisation the reviewer belongs to
    approve: bool  # False: a denial


@dataclass(frozen=True)
class Facts:
    model: str  # "org/name"
    now: datetime
    requester_id: str
    email: str | None  # trusted: verified by an issuer authoritative for its domain
    email_verified: bool
    affiliations: tuple[str, ...]  # trusted values, e.g. "faculty@uni.example"
    requester_orgs: frozenset[str]
    signed_ndas: dict[str, tuple[str, ...]] = field(default_factory=dict)  # id -> versions
    keys: tuple[KeyFact, ...] = ()  # proven, not retired
    requested_days: int | None = None
    approvals: tuple[ApprovalFact, ...] = ()
    # when each of the requester's ended grants still without a close-out ended
    closeouts_due: tuple[datetime, ...] = ()
    kind: str = "weights"  # the kind of access asked for (domain.hosting.REQUESTABLE_KINDS)


@dataclass(frozen=True)
class Decision:
    allowed: bool  # every requirement met, approvals included
    eligible: bool  # every requirement but approvals met: reviewers may approve
    missing: tuple[str, ...]  # what the requester (or reviewers) still need, in words
    reasons: tuple[str, ...]  # why, in words, for the log and `--explain`
    grant_days: int  # the duration a grant would have (clamped to the policy's longest)
    clamped: bool  # the requested duration was longer than allowed
    policy_id: str
    policy_sha256: str
