"""What every client command shares: the --broker/--token/--token-file/--json options, finding
the broker and the token, opening a client whose signing keys are checked against the pin, and
reporting our errors (text on stderr, a JSON error object with --json, the exit status).
`client_command` does all three for a command that starts by opening the client.

Commands print their results with `broker.cli.output.emit`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from broker.client import pins as pinning
from broker.client.checkpoints import check_log
from broker.client.credentials import token_for
from broker.client.http import BrokerClient
from broker.errors import EscrowError, InvalidInput, TamperDetected

BROKER_ENV = "ESCROW_BROKER"
TOKEN_ENV = "ESCROW_TOKEN"  # noqa: S105 - the variable's name, not a token

# Exit status of every client command. An error class may name its own as `exit_code`
# (broker.client.deposit.DepositFailed: 3).
EXIT_ERROR = 1
EXIT_FAILED = 3  # the broker's verification refused what was uploaded
EXIT_TAMPER = 4  # a pinned key changed (or what the broker sent was altered)
EXIT_INTERRUPTED = 130  # Ctrl-C

F = TypeVar("F", bound=Callable[..., Any])

# --- options ----------------------------------------------------------------------------------

BROKER_HELP = f"broker URL [env {BROKER_ENV}]"

broker_option = click.option(
    "--broker", "broker_url", default=lambda: os.environ.get(BROKER_ENV), help=BROKER_HELP
)
token_option = click.option("--token", default=None, help=f"broker token [env {TOKEN_ENV}]")
token_file_option = click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="read the token from this file",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="print one JSON object as the last line"
)


def token_options(command: F) -> F:
    """--token, --token-file."""
    return token_option(token_file_option(command))


def client_options(command: F) -> F:
    """--broker, --token, --token-file, --json (as `escrow deposit` takes them)."""
    return broker_option(token_options(json_option(command)))


# --- broker, token, client --------------------------------------------------------------------


def broker_url(url: str | None) -> str:
    """The --broker / ESCROW_BROKER URL, else the broker of the one stored `escrow login`."""
    if url:
        return url
    from broker.client import credentials

    logins = sorted(credentials.load())
    if len(logins) == 1:
        return logins[0]
    if logins:
        raise InvalidInput(
            f"no broker given, and you are logged in to several: {', '.join(logins)}",
            hint=f"pass --broker URL or set {BROKER_ENV}",
        )
    raise InvalidInput(
        "no broker given",
        hint=f"pass --broker URL or set {BROKER_ENV}, or log in once: escrow login URL",
    )


def resolve_token(token: str | None, token_file: Path | None, broker: str | None) -> str | None:
    """The token of --token, else --token-file, else ESCROW_TOKEN, else the stored `escrow login`
    for `broker` (refreshed if need be); None when there is none."""
    if token is None and token_file is None:
        token = os.environ.get(TOKEN_ENV)
    if token and token_file:
        raise InvalidInput(
            "give --token or --token-file, not both",
            hint="--token-file keeps the token out of the process list",
        )
    if token_file is not None:
        warn_if_readable_by_others(token_file)
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidInput(
                f"cannot read --token-file {token_file}: {getattr(error, 'strerror', error)}",
                hint="pass the file `escrow admin token create` output went to",
            ) from None
        where = f"--token-file {token_file}"
    else:
        where = "the token given"
    if token and (not token.isprintable() or any(c.isspace() for c in token)):
        # Never echo it: it is a secret, and a header built from it would fail with it inside.
        raise InvalidInput(
            f"{where} holds more than one token (spaces or several lines)",
            hint="keep only the token in it, e.g. "
            "`escrow admin token create --org ORG --role depositor --output tok`",
        )
    return token or (token_for(broker) if broker else None)


def warn_if_readable_by_others(path: Path) -> None:
    """Say so (stderr) when a token file can be read by its group or by anyone: a warning, not
    a refusal, because secrets mounted by orchestrators (Kubernetes: 0644) often are."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # reading it says what is wrong
    if mode & 0o044:
        _to_stderr(
            f"warning: --token-file {path} is readable by "
            f"{'anyone' if mode & 0o004 else 'its group'} (mode {mode & 0o777:04o}); "
            f"anyone who reads it can act as you: chmod 600 {path}"
        )


def _to_stderr(message: str) -> None:
    click.echo(message, err=True)


def pinned(client: BrokerClient, say: Callable[[str], None] = _to_stderr) -> BrokerClient:
    """`client`, after checking the broker's signing keys against the pin (pinned on first
    contact, and said so) and its audit log against the newest checkpoint seen before:
    TamperDetected if a key changed or the log does not extend what was seen."""
    if pinning.verify_broker(client) == "pinned":
        say(f"pinned the signing keys of {pinning.broker_id(client.base_url)}")
    check_log(client)
    return client


def open_client(
    url: str | None,
    token: str | None,
    token_file: Path | None,
    *,
    say: Callable[[str], None] = _to_stderr,
    **options: Any,
) -> BrokerClient:
    """A pinned client for the broker of the options, with their token (see `resolve_token`);
    `options` go to `BrokerClient`."""
    url = broker_url(url)
    return pinned(BrokerClient(url, resolve_token(token, token_file, url), **options), say)


# --- errors -----------------------------------------------------------------------------------


def exit_code(error: EscrowError) -> int:
    """The error's own `exit_code` if it has one; EXIT_TAMPER for tampering; else EXIT_ERROR."""
    code = getattr(error, "exit_code", None)
    if code is not None:
        return int(code)
    return EXIT_TAMPER if isinstance(error, TamperDetected) else EXIT_ERROR


def fail(error: EscrowError, as_json: bool, extra: dict[str, Any] | None = None) -> NoReturn:
    """Print the error and its hint on stderr and, with --json, a JSON error object (`extra`
    plus state, error, detail, hint) as the last stdout line; exit with its status."""
    click.echo(f"error: {error.diagnostics()}", err=True)
    if as_json:
        click.echo(
            json.dumps(
                {
                    **(extra or {}),
                    "state": (extra or {}).get("state", "error"),
                    "error": getattr(error, "title", "error"),
                    "detail": error.message,
                    "hint": error.hint,
                },
                sort_keys=True,
            )
        )
    sys.exit(exit_code(error))


def reporting(command: F) -> F:
    """Our errors raised by the command reported by `fail` (with --json if it was given)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EscrowError as error:
            fail(error, bool(kwargs.get("as_json")))

    return wrapper  # type: ignore[return-value]



def client_command(command: Callable[..., None]) -> Callable[..., None]:
    """`client_options` and `reporting` for a command that starts by opening the client: the
    command takes `client` (opened by `open_client` from --broker, --token, --token-file, inside
    `reporting`, so a failure to open it is reported too) and `as_json` instead of those
    options."""

    @functools.wraps(command)
    def opened(
        *args: Any,
        broker_url: str | None,
        token: str | None,
        token_file: Path | None,
        **kwargs: Any,
    ) -> None:
        command(*args, client=open_client(broker_url, token, token_file), **kwargs)

    return client_options(reporting(opened))
