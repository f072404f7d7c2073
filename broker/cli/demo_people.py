"""The demo's people, made at the operator console with the same services as `escrow admin`:
users, roles, login links, and the access tokens of real `link` login sessions."""

from __future__ import annotations

from typing import Any


def ensure_user(escrow: Any, email: str, name: str) -> Any:
    """`escrow admin user create` (the same services), or the user made by an earlier run."""
    from broker.cli.admin import LOCAL_ISSUER
    from broker.domain.principals import OPERATOR
    from broker.services import people

    with escrow.uow() as uow:
        user = people.find_user(uow, LOCAL_ISSUER, email)
        if user is None:
            user = people.create_user(
                uow, OPERATOR, LOCAL_ISSUER, email,
                people.Claims(email=email, email_verified=True, name=name),
            )
        return user.id


def grant_role(escrow: Any, email: str, role: str, org: str | None) -> None:
    """`escrow admin role grant` (idempotent)."""
    from broker.domain.principals import OPERATOR
    from broker.services import members

    with escrow.uow() as uow:
        if org:
            members.set_member_role(uow, OPERATOR, org, email, role, True)
        else:
            members.set_global_role(uow, OPERATOR, email, role, True)


def login_link(escrow: Any, email: str) -> str:
    """`escrow admin login-link`: the single-use secret of `/auth/link/<secret>`."""
    from broker.domain.principals import OPERATOR
    from broker.services import sessions

    with escrow.uow() as uow:
        return sessions.issue_login_link(uow, OPERATOR, email)


def user_token(escrow: Any, email: str) -> str:
    """A user access token of a real `link` login session: a login link is issued by the
    operator and redeemed (as the broker does at /auth/link/<secret>), and the session issues
    the token. The login is fresh, as registering a key requires."""
    from broker.services import sessions

    secret = login_link(escrow, email)
    with escrow.uow() as uow:
        return sessions.link_login_tokens(uow, secret).access_token
