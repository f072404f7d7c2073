"""Where access is decided: every API, web and CLI action asks `authorize`, and nothing else.

The table below is the whole policy of who may do what; a test walks every route with every
role against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.domain.principals import Principal
from broker.errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class OrgRole:
    """A role in the organisation that owns the thing acted on (global operators too, if set)."""

    roles: tuple[str, ...]
    operators_too: bool = False


@dataclass(frozen=True)
class GlobalRole:
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Person:
    """Any logged-in person, acting on their own things (keys, NDA signatures)."""


Rule = OrgRole | GlobalRole | Person

RULES: dict[str, Rule] = {
    "deposit.create": OrgRole(("depositor",)),
    "deposit.upload": OrgRole(("depositor",)),
    "deposit.read": OrgRole(("depositor", "reviewer", "admin")),
    "org.members.read": OrgRole(("admin",), operators_too=True),
    "org.members.write": OrgRole(("admin",), operators_too=True),
    "roles.global.write": GlobalRole(("operator",)),
    "keys.manage": Person(),
    "nda.sign": Person(),
    "request.create": Person(),
    "review.read": OrgRole(("reviewer", "admin")),
    "review.decide": OrgRole(("reviewer", "admin")),
    "grant.read_own": Person(),
    "grant.read_org": OrgRole(("reviewer", "admin")),
    "grant.revoke": OrgRole(("reviewer", "admin")),
    "grant.release": Person(),
}


def authorize(principal: Principal, action: str, org: str | None = None) -> None:
    """Allow, or raise Forbidden saying which role is needed. Console operators may do all."""
    if principal.kind in ("operator", "system"):
        return
    rule = RULES.get(action)
    if rule is None:
        raise Forbidden(f"{action}: no such action", hint="this is a bug; please report it")
    if isinstance(rule, Person):
        if principal.kind != "user":
            raise Unauthorized(
                f"{action} is done by a person logged in, not by a service token",
                hint="log in (`escrow login BROKER`, or /auth/login in a browser)",
            )
        return
    if isinstance(rule, GlobalRole):
        if principal.global_roles & set(rule.roles):
            return
        raise Forbidden(
            f"{action} needs the global role {' or '.join(rule.roles)}",
            hint="an operator grants it: escrow admin role grant USER ROLE",
        )
    if org is None:
        raise Forbidden(f"{action} needs an organisation", hint="this is a bug; please report it")
    if principal.holds(org, rule.roles):
        return
    if rule.operators_too and "operator" in principal.global_roles:
        return
    raise Forbidden(
        f"{action} on organisation {org!r} needs the role {' or '.join(rule.roles)} in {org!r}",
        hint=f"an admin of {org!r} or an operator grants it: "
        f"escrow admin role grant USER {rule.roles[0]} --org {org}",
    )
