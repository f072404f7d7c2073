"""People: users known as (issuer, subject), their erasable profiles, and their roles."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CompoundSelect, bindparam, delete, null, select, union_all

from broker.adapters.db.models import GlobalRole, Membership, Organisation, User, UserProfile
from broker.adapters.db.uow import UnitOfWork, rowcount
from broker.auditlog.leaf import canonical_json
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.names import check_role
from broker.domain.principals import GLOBAL_ROLES, Principal, PrincipalKind
from broker.errors import Conflict, InvalidInput, NotFound
from broker.services.admin import get_org
from broker.services.views_types import CallerView, Roles


@dataclass(frozen=True)
class Claims:
    """What the broker keeps of an identity provider's answer."""

    email: str | None = None
    email_verified: bool = False
    name: str | None = None
    affiliations: tuple[str, ...] = ()
    raw: dict[str, Any] | None = None


def commitment(issuer: str, subject: str, email: str | None, salt: bytes | None) -> str:
    """A salted SHA-256 commitment to who the user is, for audit leaves. Erasing the profile
    (and with it the salt) makes the leaf unlinkable to the person while the log stays valid:
    no salt, no commitment ("")."""
    if salt is None:
        return ""
    identity = canonical_json({"issuer": issuer, "subject": subject, "email": email or ""})
    return hashlib.sha256(salt + identity).hexdigest()


def audit_subject(user: User) -> dict[str, str]:
    profile = user.profile
    return person_subject(
        user.id,
        commitment(
            user.issuer,
            user.subject,
            profile.email if profile else None,
            profile.commitment_salt if profile else None,
        ),
    )


def person_subject(user_id: int, user_commitment: str) -> dict[str, str]:
    """How an audit event names a person: the user id and the commitment to who they are."""
    return {"user": str(user_id), "user_commitment": user_commitment}


def find_user(uow: UnitOfWork, issuer: str, subject: str) -> User | None:
    return uow.session.scalar(select(User).where(User.issuer == issuer, User.subject == subject))


def get_user(uow: UnitOfWork, reference: str) -> User:
    """A user by id, or by email (as typed by an operator at the console)."""
    user = None
    if reference.isdigit():
        user = uow.session.get(User, int(reference))
    if user is None:
        user = uow.session.scalar(
            select(User).join(UserProfile).where(UserProfile.email == reference)
        )
    if user is None:
        raise NotFound(
            f"user {reference!r} does not exist",
            hint="name the user by id or email; create one with `escrow admin user create`",
        )
    return user


def create_user(
    uow: UnitOfWork, actor: Principal, issuer: str, subject: str, claims: Claims
) -> User:
    """A user made ahead of their first login (an operator), committed; an existing one is a
    conflict."""
    authorize(actor, Action.USERS_WRITE)
    if find_user(uow, issuer, subject) is not None:
        raise Conflict(
            f"user {claims.email or subject!r} at {issuer} already exists",
            hint="list users with: escrow admin user list",
        )
    user = _add_user(uow, actor, issuer, subject, claims)
    uow.commit()
    return user


def upsert_user(
    uow: UnitOfWork, actor: Principal | None, issuer: str, subject: str, claims: Claims
) -> User:
    """The user for (issuer, subject), created on first sight; the profile takes the claims."""
    user = find_user(uow, issuer, subject)
    if user is None:
        return _add_user(uow, actor, issuer, subject, claims)
    _take_claims(user, claims)
    uow.session.flush()
    return user


def _add_user(
    uow: UnitOfWork, actor: Principal | None, issuer: str, subject: str, claims: Claims
) -> User:
    user = User(issuer=issuer, subject=subject)
    user.profile = UserProfile(commitment_salt=secrets.token_bytes(32))
    uow.session.add(user)
    _take_claims(user, claims)
    uow.session.flush()
    uow.audit(
        AuditAction.USER_CREATED,
        actor or Principal(kind=PrincipalKind.USER, id=str(user.id)),
        audit_subject(user),
        {"issuer": issuer},
    )
    return user


def _take_claims(user: User, claims: Claims) -> None:
    profile = user.profile or UserProfile(commitment_salt=secrets.token_bytes(32))
    user.profile = profile
    profile.email, profile.email_verified, profile.name = (
        claims.email,
        claims.email_verified,
        claims.name,
    )
    profile.affiliations = json.dumps(sorted(set(claims.affiliations)))
    profile.claims = json.dumps(claims.raw or {}, sort_keys=True, default=str)
    profile.updated_at = now()


def grant_org_role(uow: UnitOfWork, actor: Principal, user: User, org: str, role: str) -> None:
    check_role(role)
    organisation = get_org(uow, org)
    exists = uow.session.scalar(
        select(Membership).where(
            Membership.user_id == user.id,
            Membership.org_id == organisation.id,
            Membership.role == role,
        )
    )
    if exists is None:
        uow.session.add(Membership(user_id=user.id, org_id=organisation.id, role=role))
        subject = {**audit_subject(user), "org": org}
        uow.audit(AuditAction.ROLE_GRANTED, actor, subject, {"role": role})


def revoke_org_role(uow: UnitOfWork, actor: Principal, user: User, org: str, role: str) -> None:
    organisation = get_org(uow, org)
    removed = rowcount(
        uow.session.execute(
            delete(Membership).where(
                Membership.user_id == user.id,
                Membership.org_id == organisation.id,
                Membership.role == role,
            )
        )
    )
    if removed:
        subject = {**audit_subject(user), "org": org}
        uow.audit(AuditAction.ROLE_REVOKED, actor, subject, {"role": role})


def grant_global_role(uow: UnitOfWork, actor: Principal, user: User, role: str) -> None:
    if role not in GLOBAL_ROLES:
        raise InvalidInput(
            f"role {role!r} is unknown", hint=f"use one of: {', '.join(GLOBAL_ROLES)}"
        )
    exists = uow.session.scalar(
        select(GlobalRole).where(GlobalRole.user_id == user.id, GlobalRole.role == role)
    )
    if exists is None:
        uow.session.add(GlobalRole(user_id=user.id, role=role))
        uow.audit(AuditAction.ROLE_GRANTED, actor, audit_subject(user), {"role": role})


def revoke_global_role(uow: UnitOfWork, actor: Principal, user: User, role: str) -> None:
    removed = rowcount(
        uow.session.execute(
            delete(GlobalRole).where(GlobalRole.user_id == user.id, GlobalRole.role == role)
        )
    )
    if removed:
        uow.audit(AuditAction.ROLE_REVOKED, actor, audit_subject(user), {"role": role})


# One round trip, built once: every authenticated call asks it. A global role has no organisation.
_ROLES: CompoundSelect[tuple[str | None, str]] = union_all(
    select(Organisation.name, Membership.role)
    .join(Organisation, Organisation.id == Membership.org_id)
    .where(Membership.user_id == bindparam("user_id")),
    select(null(), GlobalRole.role).where(GlobalRole.user_id == bindparam("user_id")),
)


def roles_of(uow: UnitOfWork, user_id: int) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
    rows = uow.rows(_ROLES, {"user_id": user_id}).all()
    org_roles = frozenset((org, role) for org, role in rows if org is not None)
    return org_roles, frozenset(role for org, role in rows if org is None)


def describe_user(user: User, principal: Principal) -> CallerView:
    profile = user.profile
    return {
        "kind": "user",
        "id": str(user.id),
        "issuer": user.issuer,
        "subject": user.subject,
        "email": profile.email if profile else None,
        "email_verified": bool(profile and profile.email_verified),
        "name": profile.name if profile else None,
        "affiliations": json.loads(profile.affiliations) if profile else [],
        "roles": cast(Roles, principal.describe_roles()),
        "auth_time": principal.auth_time.isoformat() if principal.auth_time else None,
    }


def describe_caller(uow: UnitOfWork, principal: Principal) -> CallerView:
    """Who the caller is (`GET /api/v1/me`, the profile page): anyone authenticated may read
    this about themselves, and only about themselves. A service token or the console is
    described by its kind, id and roles; a person by their user row too."""
    if principal.kind != PrincipalKind.USER:
        roles = cast(Roles, principal.describe_roles())
        return {"kind": principal.kind, "id": principal.id, "roles": roles}
    user = uow.session.get(User, int(principal.id))
    if user is None:  # the principal was just authenticated from this user: gone since
        raise NotFound(f"user {principal.id} no longer exists", hint="log in again (/auth/login)")
    return describe_user(user, principal)
