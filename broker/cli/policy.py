"""`escrow policy check [DIR]`: validate the access policies the broker would load.

Server side, offline: it reads the files (and the NDA texts they name), never the broker.
Every error is printed as `file:line: message`, so editors and CI can jump to it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from broker.cli.output import emit

POLICY_HELP = """Access policies: YAML files in the policy directory ($ESCROW_POLICY_DIR, default
the policies shipped in the package). Commented examples are in policies/examples/.

\b
  escrow policy check                 # the configured directory
  escrow policy check policies/ --json
"""


@click.group("policy", help=POLICY_HELP)
def policy() -> None:
    pass


@policy.command("check")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def check(directory: Path | None, as_json: bool) -> None:
    """Validate every policy file of DIRECTORY; print every error with its file and line."""
    from broker.config import load_settings
    from broker.policy.loader import check_policies

    directory = directory if directory is not None else load_settings().policy_dir
    policies, problems = check_policies(directory)
    if problems or policies is None:
        result = {
            "ok": False,
            "directory": str(directory),
            "errors": [
                {"file": str(p.path), "line": p.line, "message": p.message} for p in problems
            ],
        }
        lines = [str(p) for p in problems]
        lines.append(
            f"{len(problems)} error{'s' if len(problems) != 1 else ''} in {directory}: "
            "no request can be decided until they are fixed"
        )
        emit(result, as_json, lines)
        sys.exit(1)
    listed: list[dict[str, Any]] = [
        {
            "id": p.id,
            "file": str(p.path),
            "sha256": p.sha256,
            "organisation": p.organisation,
            "models": list(p.models),
            "nda": f"{p.nda.id}>={p.nda.min_version}" if p.nda else None,
            "approvals": "auto" if p.approvals.auto else p.approvals.count,
            "max_days": p.grant.max_days,
        }
        for p in policies
    ]
    lines = [f"{len(listed)} polic{'ies' if len(listed) != 1 else 'y'} OK in {directory}"]
    lines += [
        f"  {item['id']}: {', '.join(item['models'])}  (nda {item['nda'] or 'none'}, "
        f"approvals {item['approvals']}, at most {item['max_days']} days)  "
        f"sha256:{str(item['sha256'])[:12]}…"
        for item in listed
    ]
    emit({"ok": True, "directory": str(directory), "policies": listed}, as_json, lines)
