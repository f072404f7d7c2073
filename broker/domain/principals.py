"""Who is acting, and the roles they hold: the input of every access decision.

A principal is a service token (one organisation role), a person (OIDC user, with the roles
granted to them), an operator at the server console, or the system itself (the worker).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

ORG_ROLES = ("depositor", "reviewer", "admin")  # the one list (names.check_role, policies)
GLOBAL_ROLES = ("auditor", "operator")
# A role that includes another: an admin of an organisation may review its requests (see
# domain/access.py), so a policy asking for approvals from reviewers counts an admin's review
# too. The inclusion goes one way: a policy that asks for admins does not count reviewers.
ROLE_INCLUDES: dict[str, frozenset[str]] = {"admin": frozenset({"reviewer"})}


def counts_as(held: Iterable[str], role: str) -> bool:
    """Whether someone holding the roles `held` (in one organisation) acts as `role` there."""
    return any(r == role or role in ROLE_INCLUDES.get(r, frozenset()) for r in held)


def roles_counting_as(role: str) -> tuple[str, ...]:
    """The organisation roles whose holders count as `role`: `role` and those that include it."""
    return tuple(r for r in ORG_ROLES if counts_as((r,), role))


class PrincipalKind(StrEnum):
    """Who acts: its value is what the audit log's `actor.kind` says."""

    TOKEN = "token"  # noqa: S105 (a service token, one organisation role)
    USER = "user"  # a person logged in through OIDC
    OPERATOR = "operator"  # the server console
    SYSTEM = "system"  # the worker


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    id: str
    org_roles: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (org, role)
    global_roles: frozenset[str] = field(default_factory=frozenset)
    auth_time: datetime | None = None  # when the person last proved who they are (OIDC)
    session_id: str | None = None  # the login session a person acts through

    def __post_init__(self) -> None:
        # A kind given as its word ("user") becomes the enum member: one spelling everywhere.
        object.__setattr__(self, "kind", PrincipalKind(self.kind))

    def holds(self, org: str, roles: tuple[str, ...]) -> bool:
        return any((org, role) in self.org_roles for role in roles)

    def roles_in(self, org: str) -> tuple[str, ...]:
        """The roles held in `org`, sorted: none for someone outside the organisation."""
        return tuple(sorted(role for held, role in self.org_roles if held == org))

    def audit_ref(self) -> dict[str, str]:
        """How the actor appears on the audit log: stable ids only, no personal data."""
        return {"kind": self.kind.value, "id": self.id}

    def describe_roles(self) -> dict[str, object]:
        orgs: dict[str, list[str]] = {}
        for org, role in sorted(self.org_roles):
            orgs.setdefault(org, []).append(role)
        return {"orgs": orgs, "global": sorted(self.global_roles)}


def service_token(token_id: str, org: str, role: str) -> Principal:
    return Principal(kind=PrincipalKind.TOKEN, id=token_id, org_roles=frozenset({(org, role)}))


OPERATOR = Principal(
    kind=PrincipalKind.OPERATOR, id="console", global_roles=frozenset({"operator"})
)
SYSTEM = Principal(kind=PrincipalKind.SYSTEM, id="worker")
