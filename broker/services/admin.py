"""Operator use cases: organisations and service tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from broker.adapters.db.models import Organisation, ServiceToken
from broker.adapters.db.uow import UnitOfWork
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.names import check_org_name, check_role
from broker.domain.principals import Principal, service_token
from broker.domain.secrets import new_secret, secret_matches, split_secret
from broker.errors import Conflict, NotFound, Unauthorized


def create_org(uow: UnitOfWork, actor: Principal, name: str) -> Organisation:
    check_org_name(name)
    if find_org(uow, name) is not None:
        raise Conflict(f"organisation {name!r} already exists", hint="pick another name")
    org = Organisation(name=name)
    uow.session.add(org)
    uow.session.flush()
    uow.audit(AuditAction.ORG_CREATED, actor, {"org": name})
    uow.commit()
    return org


def find_org(uow: UnitOfWork, name: str) -> Organisation | None:
    return uow.session.scalar(select(Organisation).where(Organisation.name == name))


def get_org(uow: UnitOfWork, name: str) -> Organisation:
    org = find_org(uow, name)
    if org is None:
        raise NotFound(
            f"organisation {name!r} does not exist",
            hint=f"an operator creates it with: escrow admin org create {name}",
        )
    return org


def list_orgs(uow: UnitOfWork) -> list[Organisation]:
    return list(uow.session.scalars(select(Organisation).order_by(Organisation.name)))


@dataclass(frozen=True)
class IssuedToken:
    id: str
    token: str  # shown once
    org: str
    role: str
    expires_at: datetime


def create_token(
    uow: UnitOfWork, actor: Principal, org_name: str, role: str, days: int, label: str = ""
) -> IssuedToken:
    check_role(role)
    org = get_org(uow, org_name)
    issued = new_secret("esk")
    expires = now() + timedelta(days=days)
    uow.session.add(
        ServiceToken(
            id=issued.id,
            secret_sha256=issued.secret_sha256,
            org_id=org.id,
            role=role,
            label=label,
            expires_at=expires,
        )
    )
    uow.audit(
        AuditAction.TOKEN_CREATED,
        actor,
        {"token": issued.id, "org": org_name},
        {"role": role, "expires_at": expires.isoformat(), "label": label},
    )
    uow.commit()
    return IssuedToken(issued.id, issued.plaintext, org_name, role, expires)


def revoke_token(uow: UnitOfWork, actor: Principal, token_id: str) -> None:
    token = uow.session.get(ServiceToken, token_id)
    if token is None:
        raise NotFound(
            f"token {token_id!r} does not exist", hint="list them: escrow admin token list"
        )
    if token.revoked_at is None:
        token.revoked_at = now()
        subject = {"token": token_id, "org": token.organisation.name}
        uow.audit(AuditAction.TOKEN_REVOKED, actor, subject)
    uow.commit()


def list_tokens(uow: UnitOfWork) -> list[ServiceToken]:
    return list(uow.session.scalars(select(ServiceToken).order_by(ServiceToken.created_at)))


_INVALID = Unauthorized(
    "the token is invalid, expired or revoked",
    hint="pass a current token with --token/--token-file; an operator issues one with "
    "`escrow admin token create`",
)


def authenticate(uow: UnitOfWork, presented: str) -> Principal:
    """The principal a bearer token stands for. Every failure looks the same to the caller."""
    parts = split_secret(presented, "esk")
    if parts is None:
        raise _INVALID
    token_id, secret = parts
    token = uow.session.get(ServiceToken, token_id)
    if token is None or not secret_matches(secret, token.secret_sha256):
        raise _INVALID
    if token.revoked_at is not None or token.expires_at <= now():
        raise _INVALID
    return service_token(token.id, token.organisation.name, token.role)
