"""`escrow admin …`: operator commands at the server console."""

from __future__ import annotations

import click

from broker.cli.output import emit
from broker.cli.server import server_escrow
from broker.domain.principals import OPERATOR
from broker.services import admin as service


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
        [
            issued.token,
            f"# token {issued.id} for {issued.org} ({issued.role}), expires "
            f"{issued.expires_at:%Y-%m-%d}; it is shown only this once",
        ],
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
