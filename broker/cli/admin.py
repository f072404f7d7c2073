"""`escrow admin …`: operator commands at the server console."""

from __future__ import annotations

import click
from sqlalchemy import select

from broker.adapters.db.models import User
from broker.cli.output import emit
from broker.cli.server import server_escrow
from broker.domain.principals import GLOBAL_ROLES, OPERATOR
from broker.errors import Conflict, InvalidInput
from broker.services import admin as service
from broker.services import members, people, sessions


@click.group()
def admin() -> None:
    """Operator commands (run on the server, next to the database and master key)."""


@admin.group()
def org() -> None:
    """Organisations."""


@org.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def org_create(name: str, as_json: bool) -> None:
    with server_escrow().uow() as uow:
        created = service.create_org(uow, OPERATOR, name)
        emit({"org": created.name}, as_json, [f"organisation {created.name} created"])


@org.command("list")
@click.option("--json", "as_json", is_flag=True)
def org_list(as_json: bool) -> None:
    with server_escrow().uow() as uow:
        names = [o.name for o in service.list_orgs(uow)]
        emit({"orgs": names}, as_json, names)


@admin.group()
def token() -> None:
    """Service tokens (for labs' depositors and scripts)."""


@token.command("create")
@click.option("--org", "org_name", required=True)
@click.option("--role", required=True, help="depositor, reviewer or admin")
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3650))
@click.option("--label", default="", help="what the token is for")
@click.option("--json", "as_json", is_flag=True)
def token_create(org_name: str, role: str, days: int, label: str, as_json: bool) -> None:
    """Create a token; it is printed once and stored only as a hash."""
    with server_escrow().uow() as uow:
        issued = service.create_token(uow, OPERATOR, org_name, role, days, label)
    emit(
        {
            "token": issued.token,
            "id": issued.id,
            "org": issued.org,
            "role": issued.role,
            "expires_at": issued.expires_at.isoformat(),
        },
        as_json,
        [issued.token],  # alone on stdout, so `> tok` makes a token file
    )
    if not as_json:
        click.echo(
            f"token {issued.id} for {issued.org} ({issued.role}), expires "
            f"{issued.expires_at:%Y-%m-%d}; it is shown only this once",
            err=True,
        )


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
def token_list(as_json: bool) -> None:
    with server_escrow().uow() as uow:
        rows = [
            {
                "id": t.id,
                "org": t.organisation.name,
                "role": t.role,
                "label": t.label,
                "expires_at": t.expires_at.isoformat(),
                "revoked": t.revoked_at is not None,
            }
            for t in service.list_tokens(uow)
        ]
    emit(
        {"tokens": rows},
        as_json,
        [
            f"{r['id']}  {r['org']:<20} {r['role']:<10} expires {r['expires_at'][:10]}"
            + ("  REVOKED" if r["revoked"] else "")
            for r in rows
        ],
    )


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    with server_escrow().uow() as uow:
        service.revoke_token(uow, OPERATOR, token_id)
    click.echo(f"token {token_id} revoked")


LOCAL_ISSUER = "urn:weights-escrow:local"


@admin.group()
def user() -> None:
    """People (normally created at their first OIDC login; here for bootstrap and demos)."""


@user.command("create")
@click.option("--email", required=True)
@click.option("--name", default="", help="full name")
@click.option(
    "--issuer",
    default=LOCAL_ISSUER,
    show_default=True,
    help="the OIDC issuer this person will log in with",
)
@click.option("--subject", default=None, help="their subject at that issuer (default: email)")
@click.option("--json", "as_json", is_flag=True)
def user_create(email: str, name: str, issuer: str, subject: str | None, as_json: bool) -> None:
    """Create a user, e.g. to grant roles before their first login."""
    with server_escrow().uow() as uow:
        if people.find_user(uow, issuer, subject or email) is not None:
            raise Conflict(
                f"user {email!r} at {issuer} already exists",
                hint="list users with: escrow admin user list",
            )
        created = people.upsert_user(
            uow,
            OPERATOR,
            issuer,
            subject or email,
            people.Claims(email=email, email_verified=issuer == LOCAL_ISSUER, name=name or None),
        )
        uow.commit()
        emit(
            {"user": str(created.id), "email": email, "issuer": issuer},
            as_json,
            [f"user {created.id} ({email}) created"],
        )


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
def user_list(as_json: bool) -> None:
    with server_escrow().uow() as uow:
        rows = []
        for found in uow.session.scalars(select(User).order_by(User.id)):
            org_roles, global_roles = people.roles_of(uow, found.id)
            rows.append(
                {
                    "user": str(found.id),
                    "email": found.profile.email if found.profile else None,
                    "issuer": found.issuer,
                    "roles": sorted(f"{role}@{org}" for org, role in org_roles)
                    + sorted(global_roles),
                }
            )
    emit(
        {"users": rows},
        as_json,
        [f"{r['user']:>4}  {r['email'] or '-':<32} {', '.join(r['roles'])}" for r in rows],
    )


@admin.group()
def role() -> None:
    """Roles: per organisation (depositor, reviewer, admin) or global (auditor, operator)."""


@role.command("grant")
@click.argument("user_ref", metavar="USER")
@click.argument("role_name", metavar="ROLE")
@click.option("--org", default=None, help="the organisation (for depositor, reviewer, admin)")
def role_grant(user_ref: str, role_name: str, org: str | None) -> None:
    """Grant ROLE to USER (an id or email)."""
    _set_role(user_ref, role_name, org, grant=True)
    click.echo(f"granted {role_name}{' in ' + org if org else ''} to {user_ref}")


@role.command("revoke")
@click.argument("user_ref", metavar="USER")
@click.argument("role_name", metavar="ROLE")
@click.option("--org", default=None)
def role_revoke(user_ref: str, role_name: str, org: str | None) -> None:
    """Take ROLE away from USER."""
    _set_role(user_ref, role_name, org, grant=False)
    click.echo(f"revoked {role_name}{' in ' + org if org else ''} from {user_ref}")


def _set_role(user_ref: str, role_name: str, org: str | None, grant: bool) -> None:
    with server_escrow().uow() as uow:
        if org:
            members.set_member_role(uow, OPERATOR, org, user_ref, role_name, grant)
        elif role_name in GLOBAL_ROLES:
            members.set_global_role(uow, OPERATOR, user_ref, role_name, grant)
        else:
            raise InvalidInput(
                f"role {role_name!r} needs --org, or is unknown",
                hint=f"organisation roles need --org; global roles are {', '.join(GLOBAL_ROLES)}",
            )


@admin.command("login-link")
@click.argument("user_ref", metavar="USER")
@click.option("--json", "as_json", is_flag=True)
def login_link(user_ref: str, as_json: bool) -> None:
    """A single-use login URL for USER, valid for 10 minutes and on the audit log."""
    escrow = server_escrow()
    with escrow.uow() as uow:
        target = people.get_user(uow, user_ref)
        secret = sessions.create_login_link(uow, OPERATOR, target)
        uow.commit()
    url = f"{escrow.settings.public_url}/auth/link/{secret}"
    emit(
        {"url": url, "expires_in": int(sessions.LOGIN_LINK_TTL.total_seconds())},
        as_json,
        [url, "# single use, valid for 10 minutes"],
    )
