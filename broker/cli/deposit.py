"""`escrow deposit`: a lab puts a model version in escrow.

Commands only translate: options to a `DepositOptions`, the engine's result to text or JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from broker.cli.client import (
    EXIT_INTERRUPTED,
    broker_option,
    fail,
    json_option,
    open_client,
    token_options,
)
from broker.cli.output import emit
from broker.client.deposit import (
    DEFAULT_JOBS,
    SEALED,
    DepositOptions,
    Depositor,
    open_recipient_only,
)
from broker.client.progress import Progress
from broker.errors import EscrowError, InvalidInput

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
failed (its reason and what to do are printed); 4 a pinned broker key changed; 5 still
verifying when --wait-timeout ran out (run the same command again to keep waiting).
With --json the last line of stdout is one JSON object
(deposit_id, state, files with sha256; or error, detail, hint).
"""


def parse_duration(text: str, option: str) -> float:
    """Seconds in "90", "90s", "30m", "6h" or "1d"."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    scale = units.get(value[-1:], 0) if value else 0
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise InvalidInput(f"{option} {text!r} is not a duration",
                           hint=f"e.g. {option} 90s, 30m, 6h or 1d")
    return seconds


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
@broker_option
@token_options
@click.option("--jobs", default=DEFAULT_JOBS, show_default=True, type=click.IntRange(1, 32),
              help="parts uploaded in parallel")
@click.option("--no-wait", is_flag=True, help="return once the deposit is submitted")
@click.option("--wait-timeout", default="6h", show_default=True, metavar="DURATION",
              help="stop waiting for the seal after this long (e.g. 90s, 30m, 6h)")
@click.option("--recipient-only", is_flag=True,
              help="open the deposit with no files and print its recipient")
@click.option("--pre-encrypted", is_flag=True,
              help="DIR holds NAME.age files made by `age -r RECIPIENT`")
@click.option("--sha256sums", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="with --pre-encrypted: `sha256sum` output for the plaintext files")
@click.option("--agreement", "agreement", type=click.Path(exists=True, dir_okay=False,
                                                        path_type=Path),
              help="attach this release agreement (YAML) before the seal; see "
                   "`escrow agreement --help`")
@json_option
@click.option("--quiet", "-q", is_flag=True, help="no progress on stderr")
def deposit(directory: Path | None, model: str, version: str, recipients: tuple[str, ...],
            classical: bool, broker_url: str | None, token: str | None,
            token_file: Path | None, jobs: int, no_wait: bool, wait_timeout: str,
            recipient_only: bool,
            pre_encrypted: bool, sha256sums: Path | None, agreement: Path | None,
            as_json: bool, quiet: bool) -> None:
    progress = Progress(quiet=quiet)
    extra: dict[str, Any] = {}
    depositor: Depositor | None = None
    try:
        client = open_client(
            broker_url, token, token_file, say=progress.info, pool_size=jobs + 2,
            on_retry=lambda reason, wait: progress.warn(
                f"{reason}; retrying in {wait:.1f} s"),
        )
        options = DepositOptions(
            model=model, version=version, directory=directory, recipients=recipients,
            classical=classical, jobs=jobs, wait=not no_wait, pre_encrypted=pre_encrypted,
            sha256sums=sha256sums, wait_timeout_s=parse_duration(wait_timeout, "--wait-timeout"),
            agreement=agreement.read_text(encoding="utf-8") if agreement else None,
        )
        if recipient_only:
            if directory is not None or pre_encrypted:
                raise InvalidInput("--recipient-only takes no DIR",
                                   hint="run it first, then deposit the encrypted files")
            opened = open_recipient_only(client, options, progress)
            lines = [opened["recipient"]]
            progress.info(f"deposit {opened['deposit_id']} is {opened['state']}; encrypt "
                          f"each file with: age -r {opened['recipient']} -o NAME.age NAME")
            emit(opened, as_json, lines)
            return
        if directory is None:
            raise InvalidInput("no model directory given",
                               hint="usage: escrow deposit DIR --model ORG/NAME --version V")
        depositor = Depositor(client, options, progress)
        result = depositor.run()
    except EscrowError as error:
        if depositor is not None and depositor.deposit_id:
            extra["deposit_id"] = depositor.deposit_id
        fail(error, as_json, extra)
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to resume", err=True)
        sys.exit(EXIT_INTERRUPTED)
    out = dict(result.deposit)
    out["timings"] = {k: round(v, 3) for k, v in result.timings.items()}
    out["upload"] = {"bytes_sent": result.bytes_sent, "parts_sent": result.parts_sent,
                     "parts_kept": result.parts_kept, "files_restarted": result.files_restarted}
    lines = _summary(out)
    if out["state"] != SEALED:
        lines.append("submitted: the broker is verifying it (check with the same command)")
    emit(out, as_json, lines)

