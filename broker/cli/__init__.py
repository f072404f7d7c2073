"""The `escrow` command: server commands (init, serve, db, admin, verify, worker) and client
commands (deposit, …). Commands only translate: parse options, call a service, print."""

from __future__ import annotations

import sys
from typing import Any

import click

from broker.errors import EscrowError


class EscrowGroup(click.Group):
    """Prints our errors as a message and a hint (no traceback) and exits non-zero."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EscrowError as error:
            click.echo(f"error: {error.diagnostics()}", err=True)
            sys.exit(1)


@click.group(cls=EscrowGroup)
def main() -> None:
    """weights-escrow: hold AI model weights encrypted, grant researchers time-limited access."""


def _register() -> None:
    from broker.cli import admin, login, server

    main.add_command(server.init)
    main.add_command(server.serve)
    main.add_command(server.db)
    main.add_command(server.worker)
    main.add_command(server.verify)
    main.add_command(admin.admin)
    from broker.cli import keys, nda

    main.add_command(keys.keys)
    main.add_command(nda.nda)
    main.add_command(login.login)
    main.add_command(login.whoami)
    main.add_command(login.logout)
    try:
        from broker.cli.deposit import deposit
    except ImportError:  # the client command is optional while it is being built
        return
    main.add_command(deposit)


_register()
