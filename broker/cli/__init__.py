"""The `escrow` command: server commands (init, serve, db, admin, verify, worker) and client
commands (deposit, login, keys, nda, …). Commands only translate: parse options, call a
service, print.

Subcommands are imported when they run, not at start: a client command should not pay for
the server's imports (Flask, SQLAlchemy, alembic) on every call.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from broker.errors import EscrowError

COMMANDS = {
    # server side: next to the database and the master key
    "init": "broker.cli.server:init",
    "serve": "broker.cli.server:serve",
    "db": "broker.cli.server:db",
    "worker": "broker.cli.server:worker",
    "verify": "broker.cli.server:verify",
    "recover": "broker.cli.recovery:recover",
    "fixity": "broker.cli.fixity:fixity",
    "admin": "broker.cli.admin:admin",
    "policy": "broker.cli.policy:policy",
    "demo": "broker.cli.demo:demo",
    "hosted": "broker.cli.hosted:hosted",
    "model-worker": "broker.cli.hosted:model_worker",
    "study": "broker.cli.study:study",
    # client side: labs, researchers, auditors
    "login": "broker.cli.login:login",
    "whoami": "broker.cli.login:whoami",
    "logout": "broker.cli.login:logout",
    "deposit": "broker.cli.deposit:deposit",
    "pins": "broker.cli.pins:pins",
    "keys": "broker.cli.keys:keys",
    "nda": "broker.cli.nda:nda",
    "agreement": "broker.cli.agreement:agreement",
    "fetch": "broker.cli.fetch:fetch",
    "request": "broker.cli.access:request",
    "requests": "broker.cli.access:requests",
    "review": "broker.cli.access:review",
    "grants": "broker.cli.access:grants",
    "audit": "broker.cli.audit:audit",
}


class EscrowGroup(click.Group):
    """Loads subcommands on use, and prints our errors as a message and a hint (no traceback)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EscrowError as error:
            click.echo(f"error: {error.diagnostics()}", err=True)
            sys.exit(1)


@click.group(cls=EscrowGroup)
@click.version_option(
    package_name="weights-escrow", prog_name="escrow", message="%(prog)s %(version)s"
)
def main() -> None:
    """weights-escrow: hold AI model weights encrypted, grant researchers time-limited access."""
