"""Every `escrow …` command that the code, the templates or the README tells a person to run
exists in the click tree: a hint that names a command nobody can run is a dead end.

The scan finds "escrow WORD [WORD [WORD]]" in broker/**/*.py, broker/web/templates/** and
README.md. The first word must be a command of `escrow` unless it is one of the nouns below
("the escrow identity", "escrow is …"); each following word must be a subcommand as long as
the command before it is a group.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from broker.cli import main

ROOT = Path(__file__).resolve().parents[2]
# "escrow" used as a noun, followed by an ordinary word: not a command.
PROSE = {
    "agent", "and", "as", "broker", "can", "client", "command", "container", "deployment",
    "for", "half", "header", "headers", "identity", "idempotency", "initialised", "is", "keeps",
    "local", "master", "of", "over", "proof", "recipient", "story", "that", "with", "yet",
}
# "escrow" not preceded by a word character, a hyphen, a slash, a dot or an underscore
# (weights-escrow, /opt/escrow, escrow.example), followed by up to three lowercase words.
COMMAND = re.compile(r"(?<![\w\-/.])escrow((?: [a-z][a-z0-9-]*){1,3}(?: --[a-z][a-z0-9-]*)*)")


def sources() -> list[Path]:
    files = sorted((ROOT / "broker").rglob("*.py"))
    files += sorted((ROOT / "broker" / "web" / "templates").rglob("*.html"))
    files.append(ROOT / "README.md")
    return files


def unknown_command(words: list[str]) -> str | None:
    """None when the words resolve in the tree, else the path that does not exist."""
    ctx = click.Context(main)
    command: click.Command = main
    path = ["escrow"]
    options = [w for w in words if w.startswith("--")]
    words = [w for w in words if not w.startswith("--")]
    for depth, word in enumerate(words):
        if not isinstance(command, click.Group):
            break  # the rest are arguments
        found = command.get_command(ctx, word)
        if found is None:
            if depth == 0 and word in PROSE:
                return None
            if depth > 0 and getattr(command, "invoke_without_command", False):
                return None  # `escrow grants` alone is a command; the next word is prose
            return " ".join([*path, word])
        command, path = found, [*path, word]
    known = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    known.add("--help")
    for option in options:
        if option not in known:
            return " ".join([*path, option])
    return None


def test_the_scan_finds_the_commands_it_should():
    assert unknown_command(["keys", "generate"]) is None
    assert unknown_command(["keys", "frobnicate"]) == "escrow keys frobnicate"
    assert unknown_command(["admin", "role", "grant"]) is None
    assert unknown_command(["frobnicate"]) == "escrow frobnicate"
    assert unknown_command(["fetch", "decrypts"]) is None  # fetch takes arguments
    assert unknown_command(["keys", "generate", "--post-quantum"]) is None
    assert unknown_command(["keys", "generate", "--pq"]) == "escrow keys generate --pq"
    found = {m.group(1) for m in COMMAND.finditer("run `escrow keys generate --post-quantum`; "
                                                  "weights-escrow keys")}
    assert found == {" keys generate --post-quantum"}


def test_every_escrow_command_named_in_hints_and_docs_exists():
    dead: list[str] = []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        if path.name == Path(__file__).name:
            continue
        for match in COMMAND.finditer(text):
            missing = unknown_command(match.group(1).split())
            if missing is not None:
                line = text.count("\n", 0, match.start()) + 1
                dead.append(f"{path.relative_to(ROOT)}:{line}: {missing!r} in "
                            f"{match.group(0)!r}")
    assert dead == [], "commands named that do not exist:\n" + "\n".join(dead)
