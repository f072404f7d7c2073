"""`escrow fixity run`: re-verify sealed deposits in every copy, oldest check first."""

from __future__ import annotations

import click

from broker.cli.output import emit
from broker.domain.principals import OPERATOR
from broker.services.fixity import FULL, DepositResult, FixityReport


@click.group()
def fixity() -> None:
    """Check that every escrowed object is still intact, in every copy (operator)."""


@fixity.command("run")
@click.option(
    "--max-bytes-per-s",
    type=click.IntRange(min=0),
    default=None,
    help="read at most this many bytes per second on average (default: "
    "ESCROW_FIXITY_MAX_BYTES_PER_S; 0: no limit)",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help="check N deposits in full, oldest check first; compare the others' store checksums "
    "(default: every deposit in full)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def run(max_bytes_per_s: int | None, limit: int | None, as_json: bool) -> None:
    """Decrypt and hash sealed deposits in every copy (primary and mirror), repair a bad copy
    from a good one, and log each result on the audit log. Exits 1 if any deposit failed."""
    from broker.cli.server import server_escrow
    from broker.services.fixity import run_fixity

    report = run_fixity(server_escrow(), OPERATOR, limit=limit, max_bytes_per_s=max_bytes_per_s)
    emit(report.as_dict(), as_json, _lines(report))
    if not report.ok:
        raise SystemExit(1)


def _lines(report: FixityReport) -> list[str]:
    lines: list[str] = []
    for result in report.deposits:
        lines += _deposit_lines(result)
    if report.mirror_copied or report.mirror_restored:
        lines.append(
            f"mirror: copied {len(report.mirror_copied)} object(s) of audit/ and keys/ to it, "
            f"restored {len(report.mirror_restored)} missing from the primary"
        )
    if report.mirror_error:
        lines.append(
            f"ERROR    mirror: audit/ and keys/ could not be synced: {report.mirror_error}"
        )
    full = sum(1 for d in report.deposits if d.method == FULL)
    failed = sum(1 for d in report.deposits if not d.ok)
    repaired = sum(len(d.repairs) for d in report.deposits) + len(report.mirror_restored)
    lines.append(
        f"fixity: {len(report.deposits)} deposit(s) checked ({full} in full, "
        f"{len(report.deposits) - full} by store checksums): "
        + (f"{failed} FAILED" if failed else "all intact")
        + f", {repaired} object(s) repaired; {report.bytes_read} bytes read, "
        f"{report.slept_s:.1f} s paused for the rate budget"
    )
    return lines


def _deposit_lines(result: DepositResult) -> list[str]:
    name = f"{result.model}@{result.version} ({result.deposit_id})"
    how = "full check" if result.method == FULL else "store checksums"
    if result.method == FULL and result.escalated:
        how = f"full check (checksums differed: {result.escalated[0].problem})"
    lines = [
        f"REPAIRED {name}: {r.name} ({r.copy} {r.key}): {r.problem}; rewritten from the {r.source}"
        for r in result.repairs
    ]
    if result.error:
        return [*lines, f"ERROR    {name}: could not be checked: {result.error}"]
    if not result.ok:
        return lines + [
            f"FAILED   {name}: {f.name} ({f.copy} {f.key}): {f.problem}" for f in result.problems
        ]
    copies = " + ".join(result.copies)
    return [*lines, f"ok       {name}: {how}, {copies}"]
