"""The JSON answers of the API, as types: the one source of the contract.

The services build their answers as these TypedDicts (mypy checks every member they write: a
misspelt, missing or extra key is an error), and the OpenAPI document's schemas are derived from
them (`broker/http/openapi.py`, with pydantic). A member's description is the docstring under
it; a class's docstring describes the object. `NotRequired`: a member that is sometimes absent;
`X | None`: present, and null when there is no value.

No Flask, no pydantic here: services import this module. `typing_extensions.TypedDict` because
pydantic reads only that one on Python < 3.12.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict, is_typeddict

from broker.domain.states import DepositState, GrantState, RequestState

KeyState = Literal["pending", "proven", "retired"]
KeyType = Literal["x25519", "mlkem768x25519", "ssh-ed25519"]


# --- access: decisions, requests, grants, releases --------------------------------------------


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
    key_id: str


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


class GrantView(TypedDict):
    """A grant: a researcher's access to one deposit, for one key, for a period."""

    id: str
    request_id: str
    renews_grant_id: str | None
    model: str
    version: str
    deposit_id: str
    researcher: str
    key_id: str
    recipient: str
    key_fingerprint: str
    state: GrantState
    not_before: str
    expires_at: str
    revoked_at: str | None
    releases_per_file: int
    files: list[GrantFile]


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


# --- deposits ---------------------------------------------------------------------------------


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


# --- researcher keys --------------------------------------------------------------------------


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


# --- the catalogue ----------------------------------------------------------------------------


class CatalogVersion(TypedDict):
    version: str
    deposit_id: str
    size: int
    """plaintext bytes, all files"""
    files: int
    encryption: str
    sealed_at: str | None
    last_verified_at: str | None


class NdaTerm(TypedDict):
    id: str
    min_version: str


class Eligibility(TypedDict):
    verified_email: bool
    email_domains: list[str]
    affiliations: list[str]
    proven_key: bool
    post_quantum_key: bool


class Approvals(TypedDict):
    count: int
    role: str
    auto: bool
    allow_requester_org: bool


class GrantTerms(TypedDict):
    default_days: int
    max_days: int
    releases_per_file: int
    renewal: bool


class PolicyView(TypedDict):
    """The terms a researcher must meet."""

    id: str
    sha256: str
    description: str
    nda: NdaTerm | None
    eligibility: Eligibility
    approvals: Approvals
    grant: GrantTerms
    embargo_until: str | None
    summary: list[str]
    """the policy in sentences"""


class CatalogModel(TypedDict):
    name: str
    """ORG/MODEL"""
    organisation: str
    model: str
    versions: list[CatalogVersion]
    policy: PolicyView | None
    policy_problem: str | None


class ModelList(TypedDict):
    models: list[CatalogModel]


# --- the audit log ----------------------------------------------------------------------------


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


# --- the caller, published keys, organisations, health ----------------------------------------


# "global" is a keyword: the functional form.
Roles = TypedDict("Roles", {"orgs": dict[str, list[str]], "global": list[str]})


class CallerView(TypedDict):
    """Who the caller is: a person with their profile; a service token or the console by its
    kind, id and roles."""

    kind: str
    id: str
    roles: Roles
    issuer: NotRequired[str]
    subject: NotRequired[str]
    email: NotRequired[str | None]
    email_verified: NotRequired[bool]
    name: NotRequired[str | None]
    affiliations: NotRequired[list[str]]
    auth_time: NotRequired[str | None]


class PublishedKey(TypedDict):
    algorithm: str
    key_id: str
    public_key: str
    """base64 of the Ed25519 public key"""


class CheckpointKey(TypedDict):
    algorithm: str
    key_id: str
    public_key: str
    """base64 of the Ed25519 public key"""
    origin: str
    verifier_key: str


class PublishedKeys(TypedDict):
    """The broker's Ed25519 public keys."""

    manifest: PublishedKey
    checkpoint: CheckpointKey


class MemberView(TypedDict):
    user: str
    email: str | None
    name: str | None
    role: str
    granted_at: str


class MemberList(TypedDict):
    members: list[MemberView]


class Done(TypedDict):
    ok: bool


class HealthCheck(TypedDict):
    ok: bool
    detail: str


class Health(TypedDict):
    ok: bool
    checks: dict[str, HealthCheck]


# Attribute docstrings become the members' descriptions in the OpenAPI document (pydantic's
# `use_attribute_docstrings`, given as the plain dict it is: no pydantic import here).
for _shape in list(globals().values()):
    if is_typeddict(_shape):
        _shape.__pydantic_config__ = {"use_attribute_docstrings": True}
