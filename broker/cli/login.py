"""`escrow login`, `escrow whoami`, `escrow logout`: a person's login on this machine.

`login` runs the device flow (RFC 8628): it shows a URL and a code, the person approves the code
in a browser where they are logged in to the broker, and the tokens are stored in the config
dir (`credentials.json`, 0600). Every client command then uses them when no --token,
--token-file or ESCROW_TOKEN is given. Tokens are never printed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from broker.cli.client import (
    BROKER_ENV,
    BROKER_HELP,
    EXIT_INTERRUPTED,
    json_option,
    pinned,
    reporting,
    resolve_token,
    token_options,
)
from broker.cli.output import emit
from broker.client import credentials, oauth
from broker.client import pins as pinning
from broker.client.http import BrokerClient
from broker.errors import EscrowError, InvalidInput, Unauthorized

# `escrow login` does not resume: a login the broker's outage cut off is started again.
LOGIN_GONE_HINT = "you are not logged in: run `escrow login` again once the broker answers"


def _broker_option(command: Any) -> Any:
    """[BROKER] and --broker: login, whoami and logout also default to the only login."""
    command = click.option(
        "--broker",
        "broker_option",
        default=lambda: os.environ.get(BROKER_ENV),
        help=BROKER_HELP,
    )(command)
    return click.argument("broker_argument", metavar="[BROKER]", required=False)(command)


def _which_broker(argument: str | None, option: str | None) -> str:
    """BROKER, else --broker / ESCROW_BROKER, else the only broker logged in to."""
    if argument or option:
        return str(argument or option)
    logins = credentials.load()
    if len(logins) == 1:
        return next(iter(logins))
    raise InvalidInput(
        "no broker given" + (" and several are logged in to" if logins else ""),
        hint="name it: escrow login https://escrow.example.org (or set ESCROW_BROKER)",
    )


def _who(me: dict[str, Any]) -> str:
    if me.get("kind") != "user":
        return f"{me.get('kind', '?')} {me.get('id', '?')}"
    name, email = me.get("name"), me.get("email")
    if name and email:
        return f"{name} <{email}>"
    return str(name or email or f"{me.get('subject')} at {me.get('issuer')}")


def _roles(me: dict[str, Any]) -> str:
    roles = me.get("roles") or {}
    listed = [
        f"{role}@{org}"
        for org, names in sorted((roles.get("orgs") or {}).items())
        for role in names
    ]
    listed += list(roles.get("global") or [])
    return ", ".join(listed) or "none"


def _describe(me: dict[str, Any], broker: str) -> list[str]:
    lines = [f"{_who(me)} at {broker}"]
    if me.get("kind") == "user":
        verified = "verified" if me.get("email_verified") else "not verified"
        lines.append(f"  identity: {me.get('subject')} at {me.get('issuer')}")
        if me.get("email"):
            lines.append(f"  email:    {me['email']} ({verified})")
        if me.get("affiliations"):
            lines.append(f"  affiliations: {', '.join(me['affiliations'])}")
        if me.get("auth_time"):
            lines.append(f"  authenticated at {me['auth_time']}")
    lines.append(f"  roles:    {_roles(me)}")
    return lines


@click.command("login")
@_broker_option
@click.option("--json", "as_json", is_flag=True, help="print JSON: first the code, last the result")
@reporting
def login(broker_argument: str | None, broker_option: str | None, as_json: bool) -> None:
    """Log in to BROKER from this terminal: approve a code in your browser.

    \b
    Shows a URL and a code; open the URL in a browser where you are logged in to the broker,
    check the code and approve it. The tokens are kept in the config dir (credentials.json,
    mode 0600) and used by every escrow command that gets no --token/--token-file/ESCROW_TOKEN.
    With --json, the first stdout line says where to approve which code and the last is the
    result.
    """
    try:
        url = _which_broker(broker_argument, broker_option)
        client = BrokerClient(url)
        client.gone_hint = LOGIN_GONE_HINT
        client = pinned(client)
        started = oauth.device_authorization(client)
        _instruct(started, as_json)
        answer = oauth.wait_for_approval(client, started)
        previous = credentials.get(url)
        stored = credentials.store(url, answer)
        if previous is not None:
            _end_quietly(client, previous)
        me = BrokerClient(url, stored.access_token).get("/api/v1/me")
        credentials.label(url, _who(me))
    except KeyboardInterrupt:
        click.echo("interrupted: not logged in", err=True)
        sys.exit(EXIT_INTERRUPTED)
    lines = [f"logged in as {_describe(me, stored.broker)[0]}", *_describe(me, stored.broker)[1:]]
    emit({"state": "logged_in", "broker": stored.broker, "me": me}, as_json, lines)


def _end_quietly(client: BrokerClient, replaced: credentials.StoredLogin) -> None:
    """End the login this one replaces, so that it does not linger at the broker unused."""
    try:
        oauth.revoke(client, replaced.refresh_token)
    except EscrowError as error:
        click.echo(f"note: the previous login could not be ended: {error.message}", err=True)


def _instruct(started: dict[str, Any], as_json: bool) -> None:
    minutes = max(1, int(started["expires_in"]) // 60)
    for line in (
        "To log in, open this page in a browser where you are logged in to the broker:",
        f"  {started['verification_uri']}",
        f"and enter the code  {started['user_code']}",
        f"(or open {started['verification_uri_complete']} and check that it shows this code)",
        f"Waiting for approval; the code expires in {minutes} minutes. Ctrl-C cancels.",
    ):
        click.echo(line, err=True)
    if as_json:
        emit(
            {
                "state": "pending",
                **{
                    k: started[k]
                    for k in (
                        "user_code",
                        "verification_uri",
                        "verification_uri_complete",
                        "expires_in",
                    )
                },
            },
            True,
            [],
        )


@click.command("whoami")
@_broker_option
@token_options
@json_option
@reporting
def whoami(
    broker_argument: str | None,
    broker_option: str | None,
    token: str | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    """Who the broker takes you for: your identity and roles (GET /api/v1/me)."""
    url = _which_broker(broker_argument, broker_option)
    secret = resolve_token(token, token_file, url)
    if secret is None:
        raise Unauthorized(
            f"not logged in to {pinning.broker_id(url)}", hint=f"log in: escrow login {url}"
        )
    me = pinned(BrokerClient(url, secret)).get("/api/v1/me")
    broker = pinning.broker_id(url)
    emit({**me, "broker": broker}, as_json, _describe(me, broker))


@click.command("logout")
@_broker_option
@click.option(
    "--local", is_flag=True, help="only delete the stored login (when the broker is gone for good)"
)
@json_option
@reporting
def logout(
    broker_argument: str | None, broker_option: str | None, local: bool, as_json: bool
) -> None:
    """End your login at BROKER (all of its tokens) and delete it from this machine."""
    url = _which_broker(broker_argument, broker_option)
    broker = pinning.broker_id(url)
    client = BrokerClient(url)

    def revoke(stored: credentials.StoredLogin) -> None:
        if not local:
            pinned(client)
            oauth.revoke(client, stored.refresh_token)

    removed = credentials.remove(url, revoke=revoke)
    if removed is None:
        emit(
            {"state": "logged_out", "broker": broker, "revoked": False},
            as_json,
            [f"not logged in to {broker}"],
        )
        return
    emit(
        {"state": "logged_out", "broker": broker, "revoked": not local},
        as_json,
        [
            f"logged out of {broker}: "
            + (
                "the login is deleted here only; it ends at the broker when it expires"
                if local
                else "the login is revoked at the broker and deleted here"
            )
        ],
    )
