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


@pytest.fixture(scope="session")
def postgres_shared(postgres_template) -> str:
    """One migrated database for the run; each test empties it first (faster than a copy)."""
    admin, template, created = postgres_template
    name = f"escrow_s_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    created.append(name)
    return _database_url(name)


def _empty_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    from broker.adapters.db.models import Base

    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        connection.execute(text("INSERT INTO audit_head (id, size) VALUES (1, 0)"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "escrow.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_shared")
    _empty_postgres(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def private_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of each kind that the test may damage (drop tables, downgrade)."""
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
    """An initialised escrow: local store and key, on each kind of database."""
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


# --- a real broker process -------------------------------------------------------------------

import contextlib  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

ESCROW_BIN = str(Path(sys.executable).with_name("escrow"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class BrokerProcess:
    """`escrow serve` running on loopback with its own data dir, org and depositor token."""

    url: str
    env: dict[str, str]
    data_dir: Path
    token: str
    org: str = "acme-ai"
    process: subprocess.Popen | None = None
    log: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def escrow(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run an `escrow` command with this broker's environment."""
        result = subprocess.run(
            [ESCROW_BIN, *args], env=self.env, capture_output=True, text=True, timeout=300,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"escrow {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def last_json(self, result: subprocess.CompletedProcess) -> dict:
        return json.loads(result.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        """Stop the broker and everything it started (gunicorn workers, the job worker)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        if self.process:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def start(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        self.log = self.data_dir.parent / "broker.log"
        self.process = subprocess.Popen(
            [ESCROW_BIN, "serve", "--host", "127.0.0.1", "--port", port, "--workers", "2"],
            env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() ends every child
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
            if self.process.poll() is not None:
                break
        raise AssertionError(f"broker did not start:\n{self.log.read_text()}")


def start_broker(base: Path, extra_env: dict[str, str] | None = None) -> BrokerProcess:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")},
        "ESCROW_DATA_DIR": str(base / "data"),
        "ESCROW_PUBLIC_URL": url,
        "ESCROW_CONFIG_DIR": str(base / "client-config"),
        "ESCROW_BROKER": url,
        **(extra_env or {}),
    }
    broker = BrokerProcess(url=url, env=env, data_dir=base / "data", token="")
    broker.token = _prepare_broker(env, broker.org)
    broker.env["ESCROW_TOKEN"] = broker.token
    broker.start()
    return broker


def _prepare_broker(env: dict[str, str], org: str) -> str:
    """What `escrow init`, `admin org create` and `admin token create` do, in-process (fast)."""
    from broker.config import load_settings
    from broker.domain.principals import OPERATOR
    from broker.services import admin
    from broker.services.setup import initialise

    escrow, _ = initialise(load_settings(env))
    with escrow.uow() as uow:
        admin.create_org(uow, OPERATOR, org)
    with escrow.uow() as uow:
        token = admin.create_token(uow, OPERATOR, org, "depositor", days=1).token
    escrow.engine.dispose()
    return token


@pytest.fixture
def broker_server(tmp_path: Path):  # noqa: ANN201
    """A broker on embedded defaults (SQLite, local store, local key) in a real process."""
    broker = start_broker(tmp_path)
    yield broker
    broker.stop()
