"""The public catalogue of models, versions and policies."""

from __future__ import annotations

from typing_extensions import TypedDict


class CatalogVersion(TypedDict):
    version: str
    deposit_id: str
    size: int
    """plaintext bytes, all files"""
    files: int
    encryption: str
    sealed_at: str | None
    last_verified_at: str | None
    quarantined_at: str | None
    """set while an operator has quarantined the version: no key release, no new request"""


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
    access: list[str]
    """the kinds of access it allows: weights, inference, internals"""
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
