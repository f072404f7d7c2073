"""Fixtures shared by the whole suite. Helpers to import live in `live.py` and `servers.py`."""

from __future__ import annotations

import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import servers
from contract import watch
from live import POSTGRES_ADMIN_URL, postgres_url, start_broker
from live import require_part as _require_part


@pytest.fixture
def require_part() -> Callable[[bool, str], None]:
    """`live.require_part` as a fixture: skip locally, fail in CI when a live part is missing."""
    return _require_part


# --- databases -------------------------------------------------------------------------------
# Every database test runs on SQLite and on PostgreSQL. The schema always comes from
# `alembic upgrade head`: once per run into a template, then copied per test (fast, isolated).


def _postgres_admin():
    import psycopg

    url = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def postgres_template():
    """A database migrated to head, used as the template of each test's own database."""
    try:
        admin = _postgres_admin()
    except Exception as error:
        _require_part(False, f"PostgreSQL at {POSTGRES_ADMIN_URL} ({error})")
    name = f"escrow_tpl_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    from broker.adapters.db.engine import upgrade

    try:
        upgrade(postgres_url(name))
    except Exception:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        raise
    created: list[str] = []
    yield admin, name, created
    for database in [*created, name]:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    admin.close()


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
    return postgres_url(name)


def _empty_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    from broker.adapters.db.models import Base

    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        connection.execute(text("INSERT INTO audit_head (id, size, frontier) VALUES (1, 0, '')"))
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
    return postgres_url(name)


@pytest.fixture
def settings(tmp_path: Path, database_url: str):
    from broker.config import load_settings

    return load_settings(
        {"ESCROW_DATA_DIR": str(tmp_path / "data"), "ESCROW_DATABASE_URL": database_url}
    )


@pytest.fixture
def escrow(settings):
    """An initialised escrow: local store and key, on each kind of database."""
    from broker.services.setup import initialise

    built, _ = initialise(settings, migrate=False)
    yield built
    built.engine.dispose()


@pytest.fixture
def app(escrow):
    from broker import create_app

    application = create_app(escrow.settings)
    application.config["TESTING"] = True
    violations = watch(application)  # every /api/v1 answer against the OpenAPI document
    yield application
    application.extensions["escrow"].engine.dispose()
    assert not violations, "answers not as the OpenAPI document says:\n" + "\n".join(violations)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def broker_server(tmp_path: Path):
    """A broker on embedded defaults (SQLite, local store, local key) in a real process."""
    broker = start_broker(tmp_path)
    yield broker
    broker.stop()


# --- real S3 / KMS servers (moto, s3rver) ----------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Endpoint]:
    """moto's server (S3 and KMS over HTTP) in a subprocess, for the whole session."""
    command = servers.moto_server_command()
    _require_part(command is not None, "moto_server (pip install 'moto[server]')")
    with servers.moto_server(tmp_path_factory.mktemp("moto"), command) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3rver_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Endpoint]:
    """s3rver (node; enforces presigned-URL expiry) in a subprocess, for the whole session."""
    command = servers.s3rver_command()
    _require_part(
        command is not None, f"node and s3rver ({servers.S3RVER_JS}; run make test-peers)"
    )
    with servers.s3rver(tmp_path_factory.mktemp("s3rver"), command) as endpoint:
        yield endpoint


# --- a real OpenID Provider (node oidc-provider) for web login tests -------------------------


@pytest.fixture(scope="session")
def web_listener() -> Iterator[socket.socket]:
    """A loopback socket for the broker of the web login tests, bound first so that its
    callback URL can be registered at the OpenID Providers before that broker starts."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener


def _start_oidc_provider(tmp_path_factory, web_listener, name: str):
    command = servers.oidc_provider_command()
    _require_part(
        command is not None,
        f"node and oidc-provider ({servers.OIDC_PROVIDER_PACKAGE}; run make test-peers)",
    )
    callback = f"http://127.0.0.1:{web_listener.getsockname()[1]}/auth/callback"
    client = servers.OidcClient("escrow-broker", secrets.token_urlsafe(24), (callback,))
    return servers.oidc_provider(tmp_path_factory.mktemp(name), command, client)


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory, web_listener) -> Iterator[servers.OidcProvider]:
    """A real OpenID Provider on loopback, for the whole session (tests reset `tamper`)."""
    with _start_oidc_provider(tmp_path_factory, web_listener, "oidc") as provider:
        yield provider


@pytest.fixture(scope="session")
def second_oidc_provider(tmp_path_factory, web_listener) -> Iterator[servers.OidcProvider]:
    """Another OpenID Provider (its own keys and accounts), for mix-up tests."""
    with _start_oidc_provider(tmp_path_factory, web_listener, "oidc2") as provider:
        yield provider


# --- people: users with roles, logged in through a real session and user token ---------------


@dataclass
class Person:
    user_id: int
    token: str
    email: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


PERSON_ISSUER = "https://idp.uni.example"


@pytest.fixture
def make_person(escrow):
    """A factory: a user (with optional roles) and the bearer token of a login made
    `minutes_ago` (default: just now) through a real login session."""
    from broker.domain.principals import OPERATOR
    from broker.services import admin, people, sessions

    def make(
        email: str = "ada@uni.example",
        org_roles: tuple[tuple[str, str], ...] = (),
        global_roles: tuple[str, ...] = (),
        *,
        name: str | None = None,
        minutes_ago: float = 0,
    ) -> Person:
        with escrow.uow() as uow:
            user = people.upsert_user(
                uow,
                OPERATOR,
                PERSON_ISSUER,
                email,
                people.Claims(email=email, email_verified=True, name=name or email.split("@")[0]),
            )
            for org, role in org_roles:
                if admin.find_org(uow, org) is None:
                    admin.create_org(uow, OPERATOR, org)
                people.grant_org_role(uow, OPERATOR, user, org, role)
            for role in global_roles:
                people.grant_global_role(uow, OPERATOR, user, role)
            auth_time = datetime.now(UTC) - timedelta(minutes=minutes_ago)
            session = sessions.start_session(uow, user, "web", PERSON_ISSUER, auth_time)
            pair = sessions.issue_tokens(uow, session)
            uow.commit()
            return Person(user.id, pair.access_token, email)

    return make


@pytest.fixture
def login(make_person):
    """A factory: a user logged in `minutes_ago` (default: just now), with an access token."""

    def make(email: str = "ada@uni.example", name: str = "Ada Lovelace", **options):
        return make_person(email, name=name, **options)

    return make


@pytest.fixture
def ada(login):
    return login()
