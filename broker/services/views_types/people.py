"""The caller, published keys, organisation members, health."""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict

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
