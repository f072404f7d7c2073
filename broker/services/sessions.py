"""Login sessions and the bearer secrets that stand for a person: web cookies, CLI tokens
(access + refresh, from the device grant), and single-use login links.

Every secret is random, stored as SHA-256, expiring and revocable; revoking a session ends all
of its tokens at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, select, update

from broker.adapters.db.models import (
    GlobalRole,
    LoginLink,
    LoginSession,
    Membership,
    Organisation,
    User,
    UserToken,
)
from broker.adapters.db.uow import UnitOfWork, rowcount
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import Principal, PrincipalKind
from broker.domain.secrets import new_secret, prefix_of, secret_matches, split_secret
from broker.errors import Forbidden, Unauthorized
from broker.services import admin
from broker.services.people import Claims, audit_subject, get_user, roles_of, upsert_user

SESSION_TTL = {
    "web": timedelta(hours=12),
    "device": timedelta(days=30),
    "link": timedelta(hours=12),
    # a model worker's login (broker.services.hosting): as long as a hosting grant's default,
    # so a worker restarted months later still registers; revoked with the worker's account
    "worker": timedelta(days=365),
}
ACCESS_TTL = timedelta(hours=1)
LOGIN_LINK_TTL = timedelta(minutes=10)

INVALID_TOKEN = Unauthorized(
    "the token is invalid, expired or revoked",
    hint="log in again (`escrow login BROKER`), or pass a current token with --token",
)


def start_session(
    uow: UnitOfWork, user: User, kind: str, issuer: str, auth_time: datetime
) -> LoginSession:
    """A new login of `user`, audited as `login`."""
    session = LoginSession(
        id=secrets.token_hex(16),
        user_id=user.id,
        kind=kind,
        issuer=issuer,
        auth_time=auth_time,
        expires_at=now() + SESSION_TTL[kind],
    )
    uow.session.add(session)
    uow.session.flush()
    uow.audit(
        AuditAction.USER_LOGIN,
        Principal(kind=PrincipalKind.USER, id=str(user.id), session_id=session.id),
        audit_subject(user),
        {"via": kind, "issuer": issuer, "session": session.id},
    )
    return session


def end_session(uow: UnitOfWork, session_id: str) -> None:
    session = uow.session.get(LoginSession, session_id)
    if session is None or session.revoked_at is not None:
        return
    session.revoked_at = now()
    uow.audit(
        AuditAction.USER_LOGOUT,
        Principal(kind=PrincipalKind.USER, id=str(session.user_id), session_id=session.id),
        audit_subject(session.user),
        {"session": session.id},
    )


def web_login(
    uow: UnitOfWork, issuer: str, subject: str, claims: Claims, auth_time: datetime | None
) -> str:
    """A person's web login, after their identity provider vouched for (issuer, subject): the
    user (created on first login) with these claims, and a new web session, committed with
    their audit events. Returns the session id. A disabled account is refused."""
    moment = now()
    user = upsert_user(uow, None, issuer, subject, claims)
    if user.disabled_at is not None:
        raise Forbidden("this account is disabled", hint="ask an operator of this broker")
    user.last_login_at = moment
    login_session = start_session(uow, user, "web", issuer, auth_time or moment)
    uow.commit()
    return login_session.id


def link_login(uow: UnitOfWork, presented: str) -> str:
    """Use up a single-use login link (`redeem_login_link`) and commit: the new session's id."""
    login_session = redeem_login_link(uow, presented)
    uow.commit()
    return login_session.id


def logout(uow: UnitOfWork, session_id: str) -> None:
    """End a login session (`end_session`) and commit; an unknown or ended one: nothing."""
    end_session(uow, session_id)
    uow.commit()


def live_session(uow: UnitOfWork, session_id: str) -> LoginSession | None:
    session = uow.session.get(LoginSession, session_id)
    if session is None or not _alive(
        session.revoked_at, session.expires_at, session.user.disabled_at
    ):
        return None
    return session


def _alive(revoked_at: datetime | None, expires_at: datetime, disabled_at: datetime | None) -> bool:
    """A session (or token) neither revoked nor expired, of a person whose account is enabled."""
    return revoked_at is None and expires_at > now() and disabled_at is None


def principal_of(uow: UnitOfWork, session: LoginSession) -> Principal:
    org_roles, global_roles = roles_of(uow, session.user_id)
    return Principal(
        kind=PrincipalKind.USER,
        id=str(session.user_id),
        org_roles=org_roles,
        global_roles=global_roles,
        auth_time=session.auth_time,
        session_id=session.id,
    )


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def issue_tokens(uow: UnitOfWork, session: LoginSession) -> TokenPair:
    access, refresh = new_secret("eat"), new_secret("ert")
    uow.session.add_all(
        [
            UserToken(
                id=access.id,
                secret_sha256=access.secret_sha256,
                session_id=session.id,
                kind="access",
                expires_at=min(now() + ACCESS_TTL, session.expires_at),
            ),
            UserToken(
                id=refresh.id,
                secret_sha256=refresh.secret_sha256,
                session_id=session.id,
                kind="refresh",
                expires_at=session.expires_at,
            ),
        ]
    )
    uow.session.flush()
    return TokenPair(access.plaintext, refresh.plaintext, int(ACCESS_TTL.total_seconds()))


# Every authenticated API call asks this: one query of plain columns, no ORM objects.
_LIVE_TOKEN = (
    select(
        UserToken.id,
        UserToken.secret_sha256,
        UserToken.revoked_at,
        UserToken.expires_at,
        UserToken.session_id,
        LoginSession.user_id,
        LoginSession.auth_time,
        LoginSession.revoked_at.label("session_revoked_at"),
        LoginSession.expires_at.label("session_expires_at"),
        User.disabled_at,
        Organisation.name.label("org"),
        Membership.role.label("org_role"),
        GlobalRole.role.label("global_role"),
    )
    .join(LoginSession, LoginSession.id == UserToken.session_id)
    .join(User, User.id == LoginSession.user_id)
    # The person's roles in the same round trip: a row per (membership, global role) pair, of
    # which a person has a handful.
    .outerjoin(Membership, Membership.user_id == User.id)
    .outerjoin(Organisation, Organisation.id == Membership.org_id)
    .outerjoin(GlobalRole, GlobalRole.user_id == User.id)
    .where(UserToken.id == bindparam("token_id"))
)


def _token(uow: UnitOfWork, presented: str, prefix: str) -> Sequence[Row[*tuple[Any, ...]]]:
    """The live token a secret stands for, with its session's and user's state: one row per
    role pair of the person (at least one; the token's columns are the same in each)."""
    parts = split_secret(presented, prefix)
    if parts is None:
        raise INVALID_TOKEN
    rows = uow.rows(_LIVE_TOKEN, {"token_id": parts[0]}).all()
    if not rows or not secret_matches(parts[1], rows[0].secret_sha256):
        raise INVALID_TOKEN
    found = rows[0]
    if not (
        _alive(found.revoked_at, found.expires_at, None)
        and _alive(found.session_revoked_at, found.session_expires_at, found.disabled_at)
    ):
        raise INVALID_TOKEN
    return rows


def refresh_tokens(uow: UnitOfWork, refresh_token: str) -> TokenPair:
    """A new pair for a refresh token, which is used up (rotation: a replay finds it spent)."""
    found = _token(uow, refresh_token, "ert")[0]
    token = uow.session.get(UserToken, found.id)
    session = uow.session.get(LoginSession, found.session_id)
    assert token is not None and session is not None  # just read, in this transaction
    token.revoked_at = now()
    return issue_tokens(uow, session)


def authenticate_bearer(uow: UnitOfWork, presented: str) -> Principal:
    """The principal a bearer secret stands for: a service token or a person's access token."""
    kind = prefix_of(presented)
    if kind == "esk":
        return admin.authenticate(uow, presented)
    if kind == "eat":
        rows = _token(uow, presented, "eat")
        return Principal(
            kind=PrincipalKind.USER,
            id=str(rows[0].user_id),
            org_roles=frozenset((r.org, r.org_role) for r in rows if r.org is not None),
            global_roles=frozenset(r.global_role for r in rows if r.global_role is not None),
            auth_time=rows[0].auth_time,
            session_id=rows[0].session_id,
        )
    raise INVALID_TOKEN


def create_login_link(uow: UnitOfWork, actor: Principal, user: User) -> str:
    """A single-use secret for `/auth/link/<secret>`, valid for 10 minutes, on the audit log."""
    link = new_secret("ell")
    uow.session.add(
        LoginLink(
            id=link.id,
            secret_sha256=link.secret_sha256,
            user_id=user.id,
            expires_at=now() + LOGIN_LINK_TTL,
        )
    )
    uow.audit(AuditAction.LOGIN_LINK_CREATED, actor, audit_subject(user), {"link": link.id})
    return link.plaintext


def issue_login_link(uow: UnitOfWork, actor: Principal, user_reference: str) -> str:
    """A login link for the user named by id or email (an operator), committed: its secret."""
    authorize(actor, Action.USERS_WRITE)
    secret = create_login_link(uow, actor, get_user(uow, user_reference))
    uow.commit()
    return secret


def link_login_tokens(uow: UnitOfWork, presented: str) -> TokenPair:
    """Use up a login link and issue the new session's tokens, committed (a client that logs
    in with a link it was handed, as the demo's people do)."""
    pair = issue_tokens(uow, redeem_login_link(uow, presented))
    uow.commit()
    return pair


def redeem_login_link(uow: UnitOfWork, presented: str) -> LoginSession:
    refused = Unauthorized(
        "this login link is invalid, used or expired",
        hint="ask the operator for a new one: escrow admin login-link USER",
    )
    parts = split_secret(presented, "ell")
    if parts is None:
        raise refused
    link = uow.session.get(LoginLink, parts[0])
    if link is None or not secret_matches(parts[1], link.secret_sha256):
        raise refused
    moment = now()
    # One conditional UPDATE consumes the link: of requests racing with it, exactly one
    # changes the row (the others find it used), whatever the isolation level.
    consumed = uow.session.execute(
        update(LoginLink)
        .where(
            LoginLink.id == link.id,
            LoginLink.used_at.is_(None),
            LoginLink.expires_at > moment,
        )
        .values(used_at=moment)
        .execution_options(synchronize_session=False)
    )
    if rowcount(consumed) != 1:
        raise refused
    user = uow.session.get(User, link.user_id)
    assert user is not None
    return start_session(uow, user, "link", "login-link", now())
