"""Where access is decided: every API, web and CLI action asks `authorize`, and nothing else.

The table below is the whole policy of who may do what; a test walks every route with every
role against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from broker.domain.principals import Principal, PrincipalKind
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


@dataclass(frozen=True)
class Owner:
    """Only the person the thing belongs to (their own request, their own grant): neither the
    organisation's reviewers nor other researchers."""

    thing: str  # "request", "grant": named in the refusal
    hint: str


Rule = OrgRole | GlobalRole | Person | Owner


class Action(StrEnum):
    """What `authorize` is asked about; each has its line in `RULES`."""

    DEPOSIT_CREATE = "deposit.create"
    DEPOSIT_UPLOAD = "deposit.upload"
    DEPOSIT_READ = "deposit.read"
    ORG_MEMBERS_READ = "org.members.read"
    ORG_MEMBERS_WRITE = "org.members.write"
    ROLES_GLOBAL_WRITE = "roles.global.write"
    USERS_READ = "users.read"
    USERS_WRITE = "users.write"
    KEYS_MANAGE = "keys.manage"
    NDA_SIGN = "nda.sign"
    REQUEST_CREATE = "request.create"
    REQUEST_WITHDRAW = "request.withdraw"
    REVIEW_READ = "review.read"
    REVIEW_DECIDE = "review.decide"
    GRANT_READ_OWN = "grant.read_own"
    GRANT_READ_ORG = "grant.read_org"
    GRANT_REVOKE = "grant.revoke"
    GRANT_RELEASE = "grant.release"
    HEALTH_READ = "health.read"
    GRANT_RENEW = "grant.renew"
    AGREEMENT_ATTACH = "agreement.attach"
    AGREEMENT_AMEND = "agreement.amend"
    AGREEMENT_AMEND_AS_TRUSTEE = "agreement.amend_as_trustee"
    AGREEMENT_CHECKIN = "agreement.checkin"
    AGREEMENT_RELEASE = "agreement.release"
    AGREEMENT_VOTE = "agreement.vote"
    GRANT_CLOSE = "grant.close"
    VERSION_QUARANTINE = "version.quarantine"
    NOTIFICATIONS_READ = "notifications.read"
    VERSION_REKEY = "version.rekey"
    HOSTING_MANAGE = "hosting.manage"
    HOSTING_REGISTER = "hosting.register"
    HOSTED_QUERY = "hosted.query"
    HOSTED_KEYS = "hosted.keys"  # a person's own API keys of their inference grants
    STUDY_REGISTER = "study.register"
    STUDY_READ = "study.read"
    STUDY_DECIDE = "study.decide"
    STUDY_CLOSE = "study.close"
    STUDY_CONSENT = "study.consent"
    STUDY_CAPTURES = "study.captures"
    STUDY_MEMBERS = "study.members"


RULES: dict[Action, Rule] = {
    Action.DEPOSIT_CREATE: OrgRole(("depositor",)),
    Action.DEPOSIT_UPLOAD: OrgRole(("depositor",)),
    Action.DEPOSIT_READ: OrgRole(("depositor", "reviewer", "admin")),
    Action.ORG_MEMBERS_READ: OrgRole(("admin",), operators_too=True),
    Action.ORG_MEMBERS_WRITE: OrgRole(("admin",), operators_too=True),
    Action.ROLES_GLOBAL_WRITE: GlobalRole(("operator",)),
    Action.USERS_READ: GlobalRole(("operator",)),  # every user and their roles (the console's list)
    Action.USERS_WRITE: GlobalRole(("operator",)),  # make a user or a login link for them
    Action.KEYS_MANAGE: Person(),
    Action.NDA_SIGN: Person(),
    Action.REQUEST_CREATE: Person(),
    Action.REQUEST_WITHDRAW: Owner(
        "request",
        hint="reviewers close a pending request by denying it: escrow review deny REQUEST_ID",
    ),
    Action.REVIEW_READ: OrgRole(("reviewer", "admin")),
    Action.REVIEW_DECIDE: OrgRole(("reviewer", "admin")),
    Action.GRANT_READ_OWN: Person(),
    Action.GRANT_READ_ORG: OrgRole(("reviewer", "admin")),
    Action.GRANT_REVOKE: OrgRole(("reviewer", "admin")),
    Action.GRANT_RELEASE: Person(),
    Action.HEALTH_READ: GlobalRole(("operator",)),  # the operator's page: health, verifications
    Action.GRANT_RENEW: Owner("grant", hint="list your grants with `escrow grants`"),
    # release agreements: attached by the lab with the deposit (before the seal); after the
    # seal, amended only as the agreement's own rule allows (checked by the service), and
    # proposed either by the lab's admin or by a trustee the agreement in force names. The
    # trustee is a second line, not a second principal in AGREEMENT_AMEND's rule: who a trustee
    # is depends on the agreement (verified e-mail addresses it lists), which the service checks
    # as it does for votes; a lab that has vanished must not keep its trustees from exercising
    # an amendment rule that needs no admin (a trustee's proposal counts as no admin's)
    Action.AGREEMENT_ATTACH: OrgRole(("depositor", "admin")),
    Action.AGREEMENT_AMEND: OrgRole(("admin",)),
    Action.AGREEMENT_AMEND_AS_TRUSTEE: Person(),  # a trustee the sealed agreement names
    Action.AGREEMENT_CHECKIN: OrgRole(("admin",)),
    Action.AGREEMENT_RELEASE: OrgRole(("admin",)),
    Action.AGREEMENT_VOTE: Person(),  # a trustee the agreement names (checked by the service)
    # close-out: the grant's researcher attests that the weights were deleted
    Action.GRANT_CLOSE: Owner("grant", hint="list your grants with `escrow grants`"),
    # stopping key releases of a version (a leak): the operator only, not the lab, whose
    # release agreement binds it (a lab could otherwise hold back a triggered release)
    Action.VERSION_QUARANTINE: GlobalRole(("operator",)),
    Action.NOTIFICATIONS_READ: GlobalRole(("operator",)),  # the outbox: who was notified of what
    # re-encrypting a leaked version under fresh keys, its grants revoked: the operator only,
    # for the same reason as a quarantine
    Action.VERSION_REKEY: GlobalRole(("operator",)),
    # hosted access: the operator makes model workers' accounts and hosting grants; a worker
    # (its own account) registers under its hosting grant (checked by the service); a person
    # queries a hosted version under their active inference grant (checked by the service)
    Action.HOSTING_MANAGE: GlobalRole(("operator",)),
    Action.HOSTING_REGISTER: Person(),
    Action.HOSTED_QUERY: Person(),
    Action.HOSTED_KEYS: Person(),
    # studies of live use: a researcher registers one; the model's lab (its admins) approves
    # or rejects it; its owner closes it (the lab too, through STUDY_DECIDE); any person reads
    # approved studies and consents to one; only its team (the owner and the members the owner
    # added) lists and fetches the captures
    Action.STUDY_REGISTER: Person(),
    Action.STUDY_READ: Person(),
    Action.STUDY_DECIDE: OrgRole(("admin",)),
    Action.STUDY_CLOSE: Owner("study", hint="the study's owner or the lab's admin closes it"),
    Action.STUDY_CONSENT: Person(),
    Action.STUDY_CAPTURES: Owner(
        "study", hint="the captures go to the study's team only (its owner and the members "
        "the owner adds: escrow study member add STUDY EMAIL); escrow study show STUDY names "
        "the owner"),
    Action.STUDY_MEMBERS: Owner(
        "study", hint="the study's owner adds and removes the members of its team"),
}


def authorize(
    principal: Principal,
    action: Action,
    org: str | None = None,
    owner: str | frozenset[str] | None = None,
) -> None:
    """Allow, or raise Forbidden saying which role is needed. Console operators may do all.

    `org`: the organisation owning what is acted on (org rules); `owner`: the id of the person
    it belongs to, or the ids of the people it belongs to together (owner rules)."""
    if principal.kind in (PrincipalKind.OPERATOR, PrincipalKind.SYSTEM):
        return
    rule = RULES.get(action)
    if rule is None:
        raise Forbidden(f"{action}: no such action", hint="this is a bug; please report it")
    if isinstance(rule, Person | Owner) and principal.kind != PrincipalKind.USER:
        raise Unauthorized(
            f"{action} is done by a person logged in, not by a service token",
            hint="log in (`escrow login BROKER`, or /auth/login in a browser)",
        )
    if isinstance(rule, Person):
        return
    if isinstance(rule, Owner):
        _authorize_owner(principal, action, rule, owner)
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


def _authorize_owner(principal: Principal, action: Action, rule: Owner,
                     owner: str | frozenset[str] | None) -> None:
    if owner is None:
        raise Forbidden(f"{action} needs the owner's id", hint="this is a bug; please report it")
    if principal.id == owner or (isinstance(owner, frozenset) and principal.id in owner):
        return
    raise Forbidden(
        f"{action} is done only by the person whose {rule.thing} it is, and it is not yours",
        hint=rule.hint,
    )


@dataclass(frozen=True)
class AuditScope:
    """Which audit events a caller may read: all, those of some organisations, or their own."""

    everything: bool = False
    orgs: frozenset[str] = frozenset()
    user_id: str | None = None


AUDIT_READERS = ("auditor", "operator")


def audit_scope(principal: Principal) -> AuditScope:
    """Auditors see everything; an organisation's admins its events; a person their own."""
    if principal.kind in (
        PrincipalKind.OPERATOR,
        PrincipalKind.SYSTEM,
    ) or principal.global_roles & set(AUDIT_READERS):
        return AuditScope(everything=True)
    orgs = frozenset(org for org, role in principal.org_roles if role == "admin")
    user_id = principal.id if principal.kind == PrincipalKind.USER else None
    if not orgs and user_id is None:
        raise Forbidden(
            "reading the audit log needs the global role auditor, the role admin in an "
            "organisation, or a person's login (for their own events)",
            hint="an operator grants it: escrow admin role grant USER auditor",
        )
    return AuditScope(orgs=orgs, user_id=user_id)
