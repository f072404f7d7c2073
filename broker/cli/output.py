"""One way to print results: text for people, or `--json` with one JSON object as last line."""

from __future__ import annotations

import json
from typing import Any

import click


def emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(result, sort_keys=True, default=str))
    else:
        for line in lines:
            click.echo(line)
