"""Organisation members and global roles, as managed by org admins and operators."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from broker.adapters.db.models import Membership, User
from broker.adapters.db.uow import UnitOfWork
from broker.domain.access import Action, authorize
from broker.domain.principals import Principal
from broker.services import people
from broker.services.admin import get_org
from broker.services.views_types import MemberView


def list_members(uow: UnitOfWork, actor: Principal, org: str) -> list[MemberView]:
    authorize(actor, Action.ORG_MEMBERS_READ, org)
    organisation = get_org(uow, org)
    rows = uow.session.scalars(
        select(Membership).where(Membership.org_id == organisation.id).order_by(Membership.id)
    )
    result: list[MemberView] = []
    for membership in rows:
        user = people.get_user(uow, str(membership.user_id))
        result.append(
            {
                "user": str(user.id),
                "email": user.profile.email if user.profile else None,
                "name": user.profile.name if user.profile else None,
                "role": membership.role,
                "granted_at": membership.granted_at.isoformat(),
            }
        )
    return result


def set_member_role(
    uow: UnitOfWork, actor: Principal, org: str, user_ref: str, role: str, grant: bool
) -> None:
    authorize(actor, Action.ORG_MEMBERS_WRITE, org)
    user = people.get_user(uow, user_ref)
    if grant:
        people.grant_org_role(uow, actor, user, org, role)
    else:
        people.revoke_org_role(uow, actor, user, org, role)
    uow.commit()


def set_global_role(
    uow: UnitOfWork, actor: Principal, user_ref: str, role: str, grant: bool
) -> None:
    authorize(actor, Action.ROLES_GLOBAL_WRITE)
    user = people.get_user(uow, user_ref)
    if grant:
        people.grant_global_role(uow, actor, user, role)
    else:
        people.revoke_global_role(uow, actor, user, role)
    uow.commit()


def list_users(uow: UnitOfWork, actor: Principal) -> list[dict[str, Any]]:
    """Every user with their roles ("role@org" first, then global roles), by id: the
    operator's view of who is known (`escrow admin user list`)."""
    authorize(actor, Action.USERS_READ)
    result = []
    for user in uow.session.scalars(select(User).order_by(User.id)):
        org_roles, global_roles = people.roles_of(uow, user.id)
        result.append(
            {
                "user": str(user.id),
                "email": user.profile.email if user.profile else None,
                "issuer": user.issuer,
                "roles": sorted(f"{role}@{org}" for org, role in org_roles) + sorted(global_roles),
            }
        )
    return result
