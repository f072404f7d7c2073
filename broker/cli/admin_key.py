"""`escrow admin key …`: the master key, rotated (broker/services/master_key.py), split among
trustees and rebuilt from their shares (broker/services/master_key_shares.py)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import click

from broker.adapters.custody.shares import parse_share_file, parse_share_lines
from broker.cli.admin import admin
from broker.cli.output import emit
from broker.cli.server import server_escrow
from broker.config import load_settings
from broker.services import master_key, master_key_shares

# Test-only hook (tests/custody): hold a rotation after this many re-wraps so a test can kill -9
# it half-way. Harmless if set by mistake: the rotation only waits, then goes on.
TEST_ONLY_PAUSE_ROTATION_AFTER = "ESCROW_TEST_ONLY_PAUSE_ROTATION_AFTER"


@admin.group()
def key() -> None:
    """The master key: rotate it; split it among trustees and rebuild it from their shares."""


@key.command("rotate")
@click.option(
    "--to",
    type=click.Choice(["local", "aws-kms"]),
    default=None,
    help="the backend to move to (default: the configured one; local makes a new key file)",
)
@click.option("--kms-key-id", default=None, help="with --to aws-kms: the KMS key id, ARN or alias")
@click.option(
    "--settle-seconds",
    default=master_key.SETTLE_S,
    show_default=True,
    type=click.FloatRange(0, 600),
    help="after switching the key file, keep sweeping this long for deposits that a running "
    "broker began with the old key",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def key_rotate(
    to: str | None, kms_key_id: str | None, settle_seconds: float, as_json: bool
) -> None:
    """Re-wrap every deposit identity and signing key under a new master key, with the broker
    running. Interrupted? Run it again: it finishes the same rotation."""
    escrow = server_escrow()
    target = master_key.choose_target(escrow.settings, to, kms_key_id)
    report = master_key.rotate(escrow, target, settle_s=settle_seconds, progress=_rotation_progress)
    emit(
        {**asdict(report), "configuration_pending": report.configuration_pending},
        as_json,
        _rotation_lines(report),
    )


def _rotation_progress(done: int, total: int, label: str) -> None:
    click.echo(f"re-wrapped {done}/{total}: {label}", err=True)
    pause_after = os.environ.get(TEST_ONLY_PAUSE_ROTATION_AFTER, "")
    if pause_after.isdigit() and done == int(pause_after):
        click.echo(f"test hook {TEST_ONLY_PAUSE_ROTATION_AFTER}: paused", err=True)
        time.sleep(120)


def _rotation_lines(report: master_key.RotationReport) -> list[str]:
    lines = [
        f"{'resumed and finished' if report.resumed else 'finished'}: every wrapped secret is "
        f"under {report.key} ({report.rewrapped} re-wrapped, "
        f"{report.bucket_copies_repaired} bucket copies repaired)"
    ]
    if report.configure:
        return [
            *lines,
            "the broker still wraps new deposits with the old key. Now:",
            "  1. set " + " ".join(report.configure) + " for the broker and its workers",
            "  2. restart them",
            "  3. run `escrow admin key rotate` again: it re-wraps what was wrapped meanwhile",
            "keep the old key until then: it still opens those",
        ]
    lines.append("no configuration change is needed (ESCROW_KEY_FILE holds the new key)"
                 if report.key.startswith("local:") else "no configuration change is needed")
    if report.key.startswith("aws-kms:") and not report.retired:
        lines.append("AWS KMS rotates this key's material itself once automatic rotation is "
                     "enabled on it; to move to another KMS key: escrow admin key rotate "
                     "--to aws-kms --kms-key-id <id>")
    if report.destroyable:
        lines.append("no wrapped secret needs these any more; destroy them (and their offline "
                     "backups) once no database or bucket backup from before now will be "
                     "restored, since such a backup still needs them:")
        lines += [f"  {item}" for item in report.destroyable]
    if report.key.startswith("local:"):
        lines.append("trustee shares of the old key do not rebuild the new one: run "
                     "`escrow admin key split` and have the old shares destroyed")
    return lines


@key.command("split")
@click.option("--shares", type=int, required=True, help="how many trustees get a share (<= 16)")
@click.option("--threshold", type=int, required=True, help="how many shares rebuild the key")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="write one file per trustee here (share-<n>-of-<N>.txt, mode 0600); default: print",
)
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the key file to split (default: ESCROW_KEY_FILE)")
def key_split(shares: int, threshold: int, out: Path | None, key_file: Path | None) -> None:
    """Split the local master key into SLIP-0039 word shares for trustees (M of N)."""
    escrow = server_escrow()
    with escrow.uow() as uow:
        split = master_key_shares.split_master_key(
            uow, escrow.settings, shares, threshold, key_file
        )
    if out is None:
        click.echo("\n".join(split.shares), nl=False)
    else:
        for path in master_key_shares.write_share_files(out, split):
            click.echo(f"wrote {path}")
    click.echo(
        f"{shares} shares of key {split.key_id}; any {threshold} rebuild it with "
        "`escrow admin key join`. Give one to each trustee, keep no copy together.",
        err=True,
    )


@key.command("join")
@click.argument(
    "share_files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="where to write the rebuilt key (default: ESCROW_KEY_FILE)")
@click.option("--replace", is_flag=True,
              help="if a different key file is there, move it aside instead of refusing")
def key_join(share_files: tuple[Path, ...], key_file: Path | None, replace: bool) -> None:
    """Rebuild the master key from trustee shares: share files, or one share per line on stdin."""
    if share_files:
        texts = [parse_share_file(p.name, _read_share_file(p)) for p in share_files]
    else:
        if sys.stdin.isatty():
            click.echo("type or paste the shares, one per line; then Ctrl-D", err=True)
        texts = parse_share_lines("stdin", sys.stdin.read(1 << 20))
    target = key_file or load_settings().key_file
    joined = master_key_shares.join_master_key(texts, target, replace=replace)
    if joined.moved_aside:
        click.echo(f"moved the key file that was there to {joined.moved_aside}")
    click.echo(
        f"wrote key {joined.key_id} to {joined.path} (mode 0600)"
        if joined.written
        else f"{joined.path} already holds key {joined.key_id}; nothing written"
    )


def _read_share_file(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as handle:
        return handle.read(64 * 1024)  # a share is under 1 KB: anything bigger is not one
