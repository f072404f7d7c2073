"""The README's table of audit actions names every action the log may record, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from broker.domain.events import AuditAction

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_names_every_audit_action_and_only_those():
    text = README.read_text(encoding="utf-8")
    section = text.split("### Audit actions", 1)[1].split("\n\n**", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    named = {name for row in rows for name in re.findall(r"`([a-z_]+\.[a-z_]+)`", row)}
    assert named == {action.value for action in AuditAction}
