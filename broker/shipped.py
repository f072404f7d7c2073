"""The folders that ship inside the package, found with importlib.resources (never relative to
a checkout or the current folder): the alembic environment (`migrations/` in the repository,
`broker.migrations` once installed) and the shipped policies and NDA texts (`policies/`,
`broker.policies`)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from broker.errors import ConfigError

MIGRATIONS = "broker.migrations"
POLICIES = "broker.policies"


def shipped_dir(package: str) -> Path:
    """The folder of `package` on disk. Alembic and the policy loader read files by path, so a
    package imported from a zip archive (which has no folder) is refused with the fix."""
    folder = files(package)
    if not isinstance(folder, Path):
        raise ConfigError(
            f"{package} is not a folder on disk (the broker was imported from an archive)",
            hint="install weights-escrow with pip (an unpacked install), not from a zip file",
        )
    return folder


def migrations_dir() -> Path:
    """The alembic script location: env.py, script.py.mako and versions/."""
    return shipped_dir(MIGRATIONS)


def default_policy_dir() -> Path:
    """The shipped policies (the demo's `acme-ai` and its NDA): the policy folder when
    ESCROW_POLICY_DIR is unset."""
    return shipped_dir(POLICIES)
