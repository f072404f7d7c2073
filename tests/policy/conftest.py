"""Policy tests: a policy directory of their own (with the shipped NDA texts), pure and fast."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REPO_POLICIES = REPO / "policies"

GOOD = """\
organisation: acme-ai
models: [acme-ai/*]
nda: {id: acme-research-nda, min_version: 1}
eligibility:
  verified_email: true
  proven_key: true
approvals: {count: 1, role: reviewer}
grant: {default_days: 14, max_days: 30, releases_per_file: 3}
require_post_quantum_key: true
"""


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """An empty policy directory holding the shipped NDA texts."""
    directory = tmp_path / "policies"
    directory.mkdir()
    shutil.copytree(REPO_POLICIES / "ndas", directory / "ndas")
    return directory


@pytest.fixture
def write(policy_dir: Path) -> Callable[[str, str], Path]:
    """Write a policy file into `policy_dir`."""

    def write(name: str, text: str) -> Path:
        path = policy_dir / name
        path.write_text(text)
        return path

    return write
