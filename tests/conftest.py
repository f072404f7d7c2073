"""Fixtures shared by the whole suite.

Tests that need a live part (PostgreSQL, an S3 server, the Debian `age` tool, node) call
`require_part`. Locally a missing part skips the test with the reason; in CI
(`ESCROW_TEST_REQUIRE_ALL=1`) a missing part fails it, so CI can never pass by skipping.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("ESCROW_TEST_REQUIRE_ALL") == "1"


def require_part(available: bool, what: str) -> None:
    """Skip (locally) or fail (CI) when a live part a test needs is missing."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{what} is required (ESCROW_TEST_REQUIRE_ALL=1) but missing", pytrace=False)
    pytest.skip(f"{what} is missing")


# --- databases -------------------------------------------------------------------------------
# Every database test runs on SQLite and on PostgreSQL. The schema always comes from
# `alembic upgrade head`: once per run into a template, then copied per test (fast, isolated).

import secrets  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get(
    "ESCROW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_admin():  # noqa: ANN202
    import psycopg

    url = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def postgres_template():  # noqa: ANN201
    """A database migrated to head, used as the template of each test's own database."""
    try:
        admin = _postgres_admin()
    except Exception as error:  # noqa: BLE001 - any failure means "PostgreSQL is not there"
        require_part(False, f"PostgreSQL at {POSTGRES_ADMIN_URL} ({error})")
    name = f"escrow_tpl_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    from broker.adapters.db.engine import upgrade

    try:
        upgrade(_database_url(name))
    except Exception:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        raise
    created: list[str] = []
    yield admin, name, created
    for database in [*created, name]:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    admin.close()


def _database_url(name: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from broker.adapters.db.engine import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "escrow.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "escrow.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    admin, template, created = request.getfixturevalue("postgres_template")
    name = f"escrow_t_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    created.append(name)
    return _database_url(name)


@pytest.fixture
def settings(tmp_path: Path, database_url: str):  # noqa: ANN201
    from broker.config import load_settings

    return load_settings(
        {"ESCROW_DATA_DIR": str(tmp_path / "data"), "ESCROW_DATABASE_URL": database_url}
    )


@pytest.fixture
def escrow(settings):  # noqa: ANN001, ANN201
    """An initialised escrow on the embedded defaults (local store, local key) and `database_url`."""
    from broker.services.setup import initialise

    built, _ = initialise(settings, migrate=False)
    yield built
    built.engine.dispose()


@pytest.fixture
def app(escrow):  # noqa: ANN001, ANN201
    from broker import create_app

    application = create_app(escrow.settings)
    application.config["TESTING"] = True
    yield application
    application.extensions["escrow"].engine.dispose()


@pytest.fixture
def client(app):  # noqa: ANN001, ANN201
    return app.test_client()
