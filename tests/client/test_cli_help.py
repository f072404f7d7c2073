"""Every command of the `escrow` tree says what it does, and every option what it is for
(`escrow … --help` is the manual a newcomer reads first)."""

from __future__ import annotations

from collections.abc import Iterator

import click
from click.testing import CliRunner

from broker.cli import main


def commands() -> Iterator[tuple[str, click.Command]]:
    """(path, command) of every command, groups included, loading the lazy ones."""
    todo: list[tuple[str, click.Command, click.Context]] = [
        ("escrow", main, click.Context(main, info_name="escrow"))
    ]
    while todo:
        path, command, ctx = todo.pop()
        yield path, command
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, f"{path} {name} is listed but cannot be loaded"
                todo.append((f"{path} {name}", sub, click.Context(sub, parent=ctx,
                                                                   info_name=name)))


def test_the_tree_is_walked_whole():
    paths = {path for path, _ in commands()}
    assert {"escrow audit export", "escrow admin token create", "escrow serve",
            "escrow fetch"} <= paths
    assert len(paths) > 50


def test_every_option_of_every_command_has_help():
    missing = [f"{path} {'/'.join(option.opts)}"
               for path, command in commands()
               for option in command.params
               if isinstance(option, click.Option) and not option.hidden and not option.help]
    assert missing == []


def test_every_command_says_what_it_does():
    missing = [path for path, command in commands()
               if not (command.help or command.short_help)]
    assert missing == []


def test_audit_export_help_describes_broker():
    shown = CliRunner().invoke(main, ["audit", "export", "--help"])
    assert shown.exit_code == 0, shown.output
    line = next(line for line in shown.output.splitlines() if "--broker" in line)
    assert "broker URL" in line
