"""Access: decisions, requests, reviews, grants, key releases."""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict

from broker.domain.states import GrantState, RequestState


class PolicyRef(TypedDict):
    id: str
    sha256: str


class DecisionView(TypedDict):
    """What the access policy decided, and why."""

    allowed: bool
    eligible: bool
    missing: list[str]
    reasons: list[str]
    grant_days: int
    clamped: bool
    policy: PolicyRef


class RecordedPolicy(TypedDict):
    """The policy that decided a request, as recorded with it."""

    id: str | None
    sha256: str | None


class ReviewView(TypedDict):
    reviewer: str
    approve: bool
    comment: str
    created_at: str


class SignedNda(TypedDict):
    nda: str
    version: str
    sha256: str
    signed_at: str
    current_text: bool


class ProvenKey(TypedDict):
    id: str
    type: str
    fingerprint: str


class ResearcherFacts(TypedDict):
    """What reviewers see of the requester: verified claims, NDA signatures, proven keys."""

    user: str
    issuer: str
    email: str | None
    email_verified: bool
    name: str | None
    affiliations: list[str]
    ndas: list[SignedNda]
    keys: list[ProvenKey]


class RenewedGrant(TypedDict):
    """The grant a renewal continues: its period, state and key."""

    id: str
    state: GrantState
    not_before: str
    expires_at: str
    key_id: str | None
    """null for hosted access (inference, internals): no key"""


class RequestView(TypedDict):
    """A request for access to a sealed model version."""

    id: str
    model: str
    version: str
    deposit_id: str
    state: RequestState
    purpose: str
    days_requested: int | None
    key_id: str | None
    policy: RecordedPolicy
    decision: DecisionView
    created_at: str
    decided_at: str | None
    grant_id: str | None
    renews_grant_id: str | None
    kind: str
    """weights (key releases) or inference (the hosted model, /v1)"""
    reviews: list[ReviewView]
    researcher: NotRequired[ResearcherFacts]
    """reviewers only"""
    renews_grant: NotRequired[RenewedGrant | None]
    """reviewers only: the grant a renewal continues"""


class GrantFile(TypedDict):
    index: int
    path: str
    size: int
    sha256: str | None
    releases: int


class CloseoutStatus(TypedDict):
    """Whether the grant's researcher attested that the weights were deleted after it ended."""

    due_since: str | None
    """when the grant ended, while no close-out was made (null: not due, or made)"""
    attested_at: str | None
    ssh_signed: bool
    overdue: bool
    """due for longer than the broker's ESCROW_CLOSEOUT_OVERDUE_DAYS"""


class CloseoutView(TypedDict):
    """The close-out of one grant: the exact message attested, and whether it was made."""

    grant_id: str
    ended_at: str | None
    """null while the grant has not ended (no close-out is possible yet)"""
    message: str
    """what the researcher attests, and signs with ssh-keygen -Y sign -n escrow-closeout"""
    attested_at: str | None
    ssh_key: str | None
    ssh_key_fingerprint: str | None
    ssh_signature: str | None


class QuarantineView(TypedDict):
    """A model version's quarantine: while set, no key is released and no request is taken."""

    model: str
    version: str
    deposit_id: str
    quarantined: bool
    quarantined_at: str | None
    reason: str | None
    changed: bool
    """false when the version was already in the state asked for (nothing was done)"""


class RekeyView(TypedDict):
    """A model version's newest rekey (a leak response): fresh file keys and escrow identity,
    every grant revoked; no key release while it runs."""

    model: str
    version: str
    deposit_id: str
    rekey_id: int
    state: str
    """queued, running, switched (the new objects serve; old ones being removed), done, failed"""
    reason: str
    requested_by: str
    requested_at: str
    finished_at: str | None
    error: str | None
    """why it failed (the old objects still serve), or what could not be removed"""
    generation: int
    """the deposit's object generation once the rekey switched it"""
    recipient: str
    """the new escrow recipient"""
    files_done: int
    files: int
    grants_revoked: int
    old_objects_deleted: int
    old_objects_locked: int
    """old objects left in the store until their Object Lock retention ends"""
    keep_lab_recipients: bool
    """whether the lab's own recipients (given at deposit) can open the new headers"""
    job: str | None
    """the worker job: its state and attempts"""
    changed: bool
    """false when a rekey of the version was already under way (nothing new was queued)"""


class GrantView(TypedDict):
    """A grant: a person's access to one deposit, of one kind, for a period (weights: to one
    key)."""

    id: str
    request_id: str
    renews_grant_id: str | None
    model: str
    version: str
    deposit_id: str
    researcher: str
    key_id: str | None
    """the researcher key the grant is pinned to; null for hosted access (inference,
    internals), which releases no file key and needs no key"""
    recipient: str | None
    key_fingerprint: str | None
    state: GrantState
    not_before: str
    expires_at: str
    revoked_at: str | None
    releases_per_file: int
    kind: str
    """weights: key releases; inference: the hosted model (/v1), no key; hosting: a model
    worker's"""
    requests_per_minute: int | None
    """an inference grant's quotas (null: no limit); over one, /v1 answers 429"""
    tokens_per_day: int | None
    files: list[GrantFile]
    closeout: NotRequired[CloseoutStatus]
    """in grant listings: the close-out owed once the grant ended"""


class RequestOutcome(TypedDict):
    request: RequestView
    grant: NotRequired[GrantView]
    """when the request is approved"""


class Explanation(TypedDict):
    model: str
    version: str
    deposit_id: str
    decision: DecisionView
    would_be: RequestState


class RequestList(TypedDict):
    requests: list[RequestView]


class ReviewQueue(TypedDict):
    orgs: list[str]
    requests: list[RequestView]


class GrantList(TypedDict):
    grants: list[GrantView]


class ReleasedKey(TypedDict):
    """A fresh age header of one file for the grant's key, and a short-lived payload URL."""

    grant_id: str
    deposit_id: str
    index: int
    path: str
    size: int
    payload_size: int
    sha256: str
    """the plaintext's SHA-256, as the lab declared it"""
    header: str
    """base64 of the age header"""
    header_sha256: str
    payload_url: str
    payload_url_headers: dict[str, str]
    """headers the payload's GET must send"""
    payload_url_expires_at: str
    releases_left: int
    grant_expires_at: str


class ManifestSignature(TypedDict):
    algorithm: str
    key_id: str
    signature: str


class SignedManifest(TypedDict):
    grant_id: str
    deposit_id: str
    manifest: str
    """manifest.json, exactly as stored"""
    signature: ManifestSignature
    """manifest.sig"""
