"""`escrow deposit` (a lab puts a model version in escrow) and `escrow pins` (pinned broker keys).

Commands only translate: options to a `DepositOptions`, the engine's result to text or JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from broker.client import pins as pinning
from broker.client.credentials import token_for
from broker.client.deposit import (
    DEFAULT_JOBS,
    SEALED,
    DepositFailed,
    DepositOptions,
    Depositor,
    open_recipient_only,
)
from broker.client.http import BrokerClient
from broker.client.progress import Progress
from broker.errors import EscrowError, InvalidInput, TamperDetected

EXIT_ERROR = 1
EXIT_FAILED = 3  # the broker's verification refused what was uploaded
EXIT_TAMPER = 4  # a pinned key changed

DEPOSIT_HELP = """Encrypt a model directory on this machine and put it in escrow.

\b
Every file of DIR is encrypted to the deposit's escrow recipient (post-quantum by default)
and, with --recipient, to the lab's own recipients; the plaintext SHA-256 is computed in the
same pass, parts are uploaded in parallel, and the command waits until the broker has
decrypted, hashed and sealed the deposit. Interrupt it at any point (even kill -9) and run
the same command again: it resumes without re-sending finished parts. Running it again after
the version sealed checks the local files against the manifest and exits 0 if they match.

\b
Files encrypted with the plain `age` tool (register them instead of DIR's plaintext):
  1. escrow deposit --model ORG/NAME --version V --classical --recipient-only
       opens the deposit and prints its recipient (age1…; Debian's age has no post-quantum
       type, hence --classical)
  2. for f in *; do age -r RECIPIENT -o ../enc/"$f".age "$f"; done; sha256sum * > ../SUMS
  3. escrow deposit ../enc --model ORG/NAME --version V --classical \\
       --pre-encrypted --sha256sums ../SUMS
  Each NAME.age is registered as NAME; its header and payload are stored separately.

\b
Exit status: 0 sealed (or submitted, with --no-wait); 1 error; 3 the broker's verification
failed; 4 a pinned broker key changed. With --json the last line of stdout is one JSON object
(deposit_id, state, files with sha256; or error, detail, hint).
"""


def _token(token: str | None, token_file: Path | None, broker: str | None = None) -> str | None:
    if token and token_file:
        raise InvalidInput("give --token or --token-file, not both",
                           hint="--token-file keeps the token out of the process list")
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise InvalidInput(
                f"cannot read --token-file {token_file}: {error.strerror}",
                hint="pass the file `escrow admin token create` output went to",
            ) from None
    return token or (token_for(broker) if broker else None)  # else the `escrow login` one


def _broker(url: str | None) -> str:
    if not url:
        raise InvalidInput("no broker given", hint="pass --broker URL or set ESCROW_BROKER")
    return url


def _fail(error: EscrowError, as_json: bool, extra: dict[str, Any] | None = None) -> NoReturn:
    click.echo(f"error: {error.diagnostics()}", err=True)
    if as_json:
        click.echo(json.dumps({**(extra or {}), "state": (extra or {}).get("state", "error"),
                               "error": getattr(error, "title", "error"),
                               "detail": error.message, "hint": error.hint}, sort_keys=True))
    code = (EXIT_FAILED if isinstance(error, DepositFailed)
            else EXIT_TAMPER if isinstance(error, TamperDetected) else EXIT_ERROR)
    sys.exit(code)


def _summary(deposit: dict[str, Any]) -> list[str]:
    kind = "classical" if deposit.get("classical") else "post-quantum"
    lines = [
        f"deposit {deposit['deposit_id']}: {deposit.get('model', '')}@"
        f"{deposit.get('version', '')} is {deposit['state']}",
        f"recipient ({kind}): {deposit['recipient']}",
    ]
    for f in deposit.get("files", []):
        lines.append(f"  {f.get('sha256') or '-' * 64}  {f['size']:>14}  {f['path']}")
    return lines


@click.command("deposit", help=DEPOSIT_HELP)
@click.argument("directory", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", required=True, help="ORG/NAME, e.g. acme-ai/gpt-small")
@click.option("--version", "version", required=True, help="the model version, e.g. 2024-05")
@click.option("--recipient", "recipients", multiple=True, metavar="AGE1…",
              help="also encrypt to this recipient (the lab's own key); repeatable")
@click.option("--classical", is_flag=True,
              help="a classical X25519 escrow recipient (for the plain age tool)")
@click.option("--broker", "broker_url", default=lambda: os.environ.get("ESCROW_BROKER"),
              help="broker URL [env ESCROW_BROKER]")
@click.option("--token", default=None, help="broker token [env ESCROW_TOKEN]")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="read the token from this file")
@click.option("--jobs", default=DEFAULT_JOBS, show_default=True, type=click.IntRange(1, 32),
              help="parts uploaded in parallel")
@click.option("--no-wait", is_flag=True, help="return once the deposit is submitted")
@click.option("--recipient-only", is_flag=True,
              help="open the deposit with no files and print its recipient")
@click.option("--pre-encrypted", is_flag=True,
              help="DIR holds NAME.age files made by `age -r RECIPIENT`")
@click.option("--sha256sums", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="with --pre-encrypted: `sha256sum` output for the plaintext files")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
@click.option("--quiet", "-q", is_flag=True, help="no progress on stderr")
def deposit(directory: Path | None, model: str, version: str, recipients: tuple[str, ...],
            classical: bool, broker_url: str | None, token: str | None,
            token_file: Path | None, jobs: int, no_wait: bool, recipient_only: bool,
            pre_encrypted: bool, sha256sums: Path | None, as_json: bool, quiet: bool) -> None:
    progress = Progress(quiet=quiet)
    extra: dict[str, Any] = {}
    depositor: Depositor | None = None
    try:
        if token is None and token_file is None:
            token = os.environ.get("ESCROW_TOKEN")
        client = BrokerClient(
            _broker(broker_url), _token(token, token_file, broker_url), pool_size=jobs + 2,
            on_retry=lambda reason, wait: progress.warn(
                f"connection problem ({reason}); retrying in {wait:.1f} s"),
        )
        if pinning.verify_broker(client) == "pinned":
            progress.info(f"pinned the signing keys of {pinning.broker_id(client.base_url)}")
        options = DepositOptions(
            model=model, version=version, directory=directory, recipients=recipients,
            classical=classical, jobs=jobs, wait=not no_wait, pre_encrypted=pre_encrypted,
            sha256sums=sha256sums,
        )
        if recipient_only:
            if directory is not None or pre_encrypted:
                raise InvalidInput("--recipient-only takes no DIR",
                                   hint="run it first, then deposit the encrypted files")
            opened = open_recipient_only(client, options, progress)
            lines = [opened["recipient"]]
            progress.info(f"deposit {opened['deposit_id']} is {opened['state']}; encrypt "
                          f"each file with: age -r {opened['recipient']} -o NAME.age NAME")
            _emit(opened, as_json, lines)
            return
        if directory is None:
            raise InvalidInput("no model directory given",
                               hint="usage: escrow deposit DIR --model ORG/NAME --version V")
        depositor = Depositor(client, options, progress)
        result = depositor.run()
    except EscrowError as error:
        if depositor is not None and depositor.deposit_id:
            extra["deposit_id"] = depositor.deposit_id
        _fail(error, as_json, extra)
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to resume", err=True)
        sys.exit(130)
    out = dict(result.deposit)
    out["timings"] = {k: round(v, 3) for k, v in result.timings.items()}
    out["upload"] = {"bytes_sent": result.bytes_sent, "parts_sent": result.parts_sent,
                     "parts_kept": result.parts_kept, "files_restarted": result.files_restarted}
    lines = _summary(out)
    if out["state"] != SEALED:
        lines.append("submitted: the broker is verifying it (check with the same command)")
    _emit(out, as_json, lines)


def _emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(result, sort_keys=True, default=str))
    else:
        for line in lines:
            click.echo(line)


@click.group("pins")
def pins() -> None:
    """The brokers' signing keys this machine pinned on first contact."""


@pins.command("list")
@click.option("--json", "as_json", is_flag=True)
def pins_list(as_json: bool) -> None:
    pinned = pinning.load_pins()
    lines = [f"{name}  manifest {keys['manifest']['key_id']}  "
             f"checkpoint {keys['checkpoint']['key_id']}" for name, keys in sorted(pinned.items())]
    _emit({"pins": pinned}, as_json, lines or ["no brokers pinned"])


@pins.command("forget")
@click.argument("broker_url")
def pins_forget(broker_url: str) -> None:
    """Forget a broker's pinned keys (only after its operator confirmed a key rotation)."""
    if pinning.forget(broker_url):
        click.echo(f"forgot the keys of {pinning.broker_id(broker_url)}; the next command "
                   "pins the keys it is shown")
    else:
        click.echo(f"no keys pinned for {pinning.broker_id(broker_url)}")
