"""`escrow fetch`: a researcher downloads, decrypts and checks a model version they were granted.

Commands only translate: options to a `FetchOptions`, the engine's result to text or JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
from broker.client.fetch import DEFAULT_JOBS, Fetcher, FetchOptions
from broker.client.progress import Progress
from broker.domain.units import human_bytes
from broker.errors import EscrowError

FETCH_HELP = """Download a model version you were granted, decrypt it and check it.

\b
TARGET is ORG/NAME@VERSION. The broker's signed manifest is verified with its pinned key,
every file is decrypted as it streams and its SHA-256 checked against that manifest, and a
file appears under --out only once it is correct (until then it is NAME.part). Interrupt it
at any point and run the same command again: it resumes from what is on disk, and files
already fetched and verified are skipped.

\b
--age-files writes NAME.age (header + payload) instead, for the plain age tool:
  age -d -i KEY -o NAME NAME.age
For a post-quantum key (age1pq1…) that needs age 1.3 or later; without --age-files
`escrow fetch` decrypts them itself.
With --identity the files are still checked against the manifest (decrypted in memory).

\b
Exit status: 0 fetched; 1 error (no grant, grant expired or revoked, wrong identity, …);
4 integrity or signature failure (a pinned key changed, a payload or manifest was altered).
With --json the last line of stdout is one JSON object.
"""


AGE_FILES_POST_QUANTUM = (
    "note: your grant is to a post-quantum key (mlkem768x25519): the plain age tool reads "
    "these .age files from version 1.3 on (older ones, e.g. Debian's age 1.1, say 'unknown "
    "identity type'); `escrow fetch` without --age-files decrypts them itself"
)


@click.command("fetch", help=FETCH_HELP)
@click.argument("target")
@click.option("--identity", "identity_file",
              type=click.Path(dir_okay=False, path_type=Path),
              help="your age identity file (or OpenSSH ed25519 key) the grant was made for")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="directory to write the model into (created if missing)")
@click.option("--grant", "grant_id", default=None, help="use this grant (default: your active "
              "grant for TARGET)")
@click.option("--jobs", default=DEFAULT_JOBS, show_default=True, type=click.IntRange(1, 32),
              help="ranged downloads in parallel")
@click.option("--age-files", is_flag=True,
              help="write NAME.age files (header + payload) for `age -d`, not plaintext")
@broker_option
@token_options
@json_option
@click.option("--quiet", "-q", is_flag=True, help="no progress on stderr")
def fetch(target: str, identity_file: Path | None, out: Path, grant_id: str | None, jobs: int,
          age_files: bool, broker_url: str | None, token: str | None, token_file: Path | None,
          as_json: bool, quiet: bool) -> None:
    progress = Progress(quiet=quiet, verb="fetched")
    try:
        client = open_client(
            broker_url, token, token_file, say=progress.info, pool_size=jobs + 4,
            on_retry=lambda reason, wait: progress.warn(
                f"{reason}; retrying in {wait:.1f} s"),
        )
        options = FetchOptions(target=target, out=out, identity_file=identity_file,
                               grant_id=grant_id, jobs=jobs, age_files=age_files)
        result = Fetcher(client, options, progress).run()
    except EscrowError as error:
        fail(error, as_json, {"target": target})
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to resume", err=True)
        sys.exit(EXIT_INTERRUPTED)
    lines = [f"{result.model}@{result.version} (grant {result.grant_id}, deposit "
             f"{result.deposit_id}) in {result.out}"]
    for f in result.files:
        lines.append(f"  {f.sha256}  {f.size:>14}  {f.path}  ({f.state})")
    rate = result.bytes_downloaded / max(result.seconds, 1e-6) / 1e6
    lines.append(f"{len(result.files)} file(s) verified against the signed manifest; "
                 f"downloaded {human_bytes(result.bytes_downloaded)} in {result.seconds:.1f} s "
                 f"({rate:.0f} MB/s)")
    if age_files and result.post_quantum:
        lines.append(AGE_FILES_POST_QUANTUM)
    if age_files and not identity_file:
        lines.append("not checked: without --identity the .age files were not decrypted; "
                     "after `age -d`, compare with the sha256 above")
        lines[-2] = lines[-2].replace("verified against the signed manifest", "written")
    answer = result.to_json()
    if age_files and result.post_quantum:
        answer["note"] = AGE_FILES_POST_QUANTUM
    emit(answer, as_json, lines)
