"""`escrow admin …`: operator commands at the server console."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import click

from broker.cli.notifications import notifications as notifications_command
from broker.cli.output import emit
from broker.cli.server import server_escrow
from broker.domain.principals import GLOBAL_ROLES, OPERATOR
from broker.errors import Conflict, InvalidInput
from broker.services import admin as service
from broker.services import health as health_service
from broker.services import members, people, quarantine, sessions
from broker.services import uploads as uploads_service


@click.group()
def admin() -> None:
    """Operator commands (run on the server, next to the database and master key)."""


@admin.command("health")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def health(as_json: bool) -> None:
    """Check each part the broker depends on: database, object store, mirror, key custody.

    \b
    One line per part, each probe bounded in time (a part that hangs is reported as not
    answering). Exit status 0 if every part is up, 1 if any is down.
    """
    checks = health_service.check_all(server_escrow(), OPERATOR)
    down = [c.name for c in checks if not c.ok]
    lines = [f"{'ok  ' if c.ok else 'DOWN'}  {c.name}: {c.detail}" for c in checks]
    lines.append(f"{len(down)} part(s) down: {', '.join(down)}" if down
                 else "all parts answer")
    emit({"ok": not down, "down": down, "checks": [asdict(c) for c in checks]}, as_json, lines)
    if down:
        sys.exit(1)


@admin.group()
def org() -> None:
    """Organisations."""


@org.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def org_create(name: str, as_json: bool) -> None:
    """Create the organisation NAME (a lab: its models, roles and tokens)."""
    with server_escrow().uow() as uow:
        created = service.create_org(uow, OPERATOR, name)
        emit({"org": created.name}, as_json, [f"organisation {created.name} created"])


@org.command("list")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def org_list(as_json: bool) -> None:
    """List the organisations."""
    with server_escrow().uow() as uow:
        names = [o.name for o in service.list_orgs(uow)]
        emit({"orgs": names}, as_json, names)


@admin.group()
def token() -> None:
    """Service tokens (for labs' depositors and scripts)."""


@token.command("create")
@click.option("--org", "org_name", required=True, help="the organisation the token acts for")
@click.option("--role", required=True, help="depositor, reviewer or admin")
@click.option(
    "--days",
    default=90,
    show_default=True,
    type=click.IntRange(1, 3650),
    help="days until the token expires",
)
@click.option("--label", default="", help="what the token is for")
@click.option(
    "--output",
    "-o",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write the token to this new file, mode 0600, instead of printing it",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def token_create(
    org_name: str, role: str, days: int, label: str, output: Path | None, as_json: bool
) -> None:
    """Create a token; it is shown once (or written to --output) and stored only as a hash."""
    handle = _new_private_file(output) if output is not None else None
    try:
        with server_escrow().uow() as uow:
            issued = service.create_token(uow, OPERATOR, org_name, role, days, label)
        if handle is not None:
            handle.write(issued.token + "\n")
            handle.close()
    except BaseException:
        if handle is not None and output is not None:
            handle.close()
            output.unlink(missing_ok=True)
        raise
    if output is not None:
        shown = {"id": issued.id, "org": issued.org, "role": issued.role}
        emit(
            {**shown, "token_file": str(output), "expires_at": issued.expires_at.isoformat()},
            as_json,
            [
                f"token {issued.id} for {issued.org} ({issued.role}) written to {output} "
                f"(mode 0600), expires {issued.expires_at:%Y-%m-%d}"
            ],
        )
        return
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


def _new_private_file(path: Path) -> TextIO:
    """`path` created for writing, mode 0600 from the start; an existing file is refused (it
    may be another token), before any token is made."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise Conflict(
            f"--output {path} already exists",
            hint="choose a new file name, or remove the old token file first",
        ) from None
    except OSError as error:
        raise InvalidInput(
            f"cannot create --output {path}: {error.strerror}",
            hint="choose a file in a folder you can write to",
        ) from None
    return os.fdopen(fd, "w", encoding="utf-8")


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def token_list(as_json: bool) -> None:
    """List the service tokens (never their secrets): id, org, role, expiry, label."""
    with server_escrow().uow() as uow:
        rows: list[dict[str, Any]] = [
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
    """Revoke a service token at once."""
    with server_escrow().uow() as uow:
        service.revoke_token(uow, OPERATOR, token_id)
    click.echo(f"token {token_id} revoked")


LOCAL_ISSUER = "urn:weights-escrow:local"


@admin.group()
def user() -> None:
    """People (normally created at their first OIDC login; here for bootstrap and demos)."""


@user.command("create")
@click.option("--email", required=True, help="their email address")
@click.option("--name", default="", help="full name")
@click.option(
    "--issuer",
    default=LOCAL_ISSUER,
    show_default=True,
    help="the OIDC issuer this person will log in with",
)
@click.option("--subject", default=None, help="their subject at that issuer (default: email)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def user_create(email: str, name: str, issuer: str, subject: str | None, as_json: bool) -> None:
    """Create a user, e.g. to grant roles before their first login."""
    with server_escrow().uow() as uow:
        created = people.create_user(
            uow,
            OPERATOR,
            issuer,
            subject or email,
            people.Claims(email=email, email_verified=issuer == LOCAL_ISSUER, name=name or None),
        )
        emit(
            {"user": str(created.id), "email": email, "issuer": issuer},
            as_json,
            [f"user {created.id} ({email}) created"],
        )


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def user_list(as_json: bool) -> None:
    """List the people and their roles."""
    with server_escrow().uow() as uow:
        rows = members.list_users(uow, OPERATOR)
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
@click.option("--org", default=None, help="the organisation (for depositor, reviewer, admin)")
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
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def login_link(user_ref: str, as_json: bool) -> None:
    """A single-use login URL for USER, valid for 10 minutes and on the audit log."""
    escrow = server_escrow()
    with escrow.uow() as uow:
        secret = sessions.issue_login_link(uow, OPERATOR, user_ref)
    url = f"{escrow.settings.public_url}/auth/link/{secret}"
    emit(
        {"url": url, "expires_in": int(sessions.LOGIN_LINK_TTL.total_seconds())},
        as_json,
        [url, "# single use, valid for 10 minutes"],
    )


# --- abandoned multipart uploads (broker/services/uploads.py) ---------------------------------


@admin.group()
def uploads() -> None:
    """Multipart uploads the stores still hold: abort the abandoned ones to free their parts."""


@uploads.command("gc")
@click.option(
    "--older-than",
    "older_than",
    default="7d",
    show_default=True,
    help="abort uploads idle this long (no part received): e.g. 7d, 12h, 30m",
)
@click.option("--dry-run", is_flag=True, help="list what would be aborted; abort nothing")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def uploads_gc(older_than: str, dry_run: bool, as_json: bool) -> None:
    """List the uploads idle longer than --older-than in every copy, then abort them."""
    age = uploads_service.parse_age(older_than)
    escrow = server_escrow()
    found = uploads_service.find_abandoned(escrow, age)
    if not as_json:
        verb = "would abort" if dry_run else "aborting"
        click.echo(f"{len(found)} upload(s) idle for {older_than} or more; {verb}:")
        for item in found:
            click.echo(f"  {item.describe()}")
    done = found if dry_run else uploads_service.abort_uploads(escrow, found, OPERATOR)
    failed = [item for item in done if item.error]
    freed = sum(item.bytes for item in done if item.aborted)
    lines = [] if dry_run else [f"aborted {len(done) - len(failed)}, freed {freed} bytes"]
    lines += [f"  not aborted: {item.describe()}: {item.error}" for item in failed]
    emit(
        {
            "dry_run": dry_run,
            "older_than": older_than,
            "uploads": [asdict(item) for item in done],
            "freed_bytes": freed,
        },
        as_json,
        lines,
    )
    if failed:
        sys.exit(1)


@admin.group()
def version() -> None:
    """Model versions: quarantine one (no key release, no new request) and lift it; rekey one
    after a leak (fresh keys, every grant revoked) and show how its rekey stands."""


def _quarantine_lines(result: dict[str, Any]) -> list[str]:
    name = f"{result['model']}@{result['version']}"
    if result["quarantined"]:
        state = f"quarantined since {result['quarantined_at']} ({result['reason']})"
    else:
        state = "not quarantined: key releases and requests are allowed"
    done = "" if result["changed"] else " (already so: nothing changed)"
    return [f"{name} is {state}{done}"]


@version.command("quarantine")
@click.argument("target", metavar="ORG/MODEL@VERSION")
@click.option("--reason", required=True, help="why (a leak report, a dispute); on the audit log")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def version_quarantine(target: str, reason: str, as_json: bool) -> None:
    """Stop every key release and new request of a version at once, until lifted."""
    model, _, number = target.partition("@")
    with server_escrow().uow() as uow:
        result = dict(quarantine.quarantine(uow, OPERATOR, model, number, reason))
    emit(result, as_json, _quarantine_lines(result))


@version.command("lift")
@click.argument("target", metavar="ORG/MODEL@VERSION")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def version_lift(target: str, as_json: bool) -> None:
    """Lift a version's quarantine: key releases and requests resume."""
    model, _, number = target.partition("@")
    with server_escrow().uow() as uow:
        result = dict(quarantine.lift(uow, OPERATOR, model, number))
    emit(result, as_json, _quarantine_lines(result))


admin.add_command(notifications_command)  # `escrow admin notifications` (broker/cli/notifications)
from broker.cli import admin_key, admin_rekey  # noqa: E402, F401  (`key`; `version`'s rekey)
