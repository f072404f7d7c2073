"""Engines. The PostgreSQL pool: a connection that sat idle is tested before use and replaced if
the server dropped it; one in steady use is not (no round trip per transaction). SQLite: one too
old for RETURNING is refused at start, saying what to do."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, exc, text
from sqlalchemy.pool import NullPool

from broker.adapters.db import engine as engine_module
from broker.adapters.db.engine import make_engine


@pytest.fixture
def postgres_engine(postgres_shared):
    engine = make_engine(postgres_shared)
    yield engine
    engine.dispose()


def _backend_pid(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _terminate(engine, pid: int) -> None:
    """What a server restart or a firewall does to a pooled connection, from another one."""
    other = create_engine(engine.url, poolclass=NullPool)
    with other.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    other.dispose()


def test_a_connection_dropped_while_idle_is_replaced_before_use(postgres_engine, monkeypatch):
    pid = _backend_pid(postgres_engine)
    _terminate(postgres_engine, pid)
    monkeypatch.setattr(engine_module, "IDLE_BEFORE_PING_S", 0.0)  # every pooled one is "idle"
    assert _backend_pid(postgres_engine) not in (pid, None)  # the call works, on a new one


def test_a_connection_in_steady_use_is_not_pinged(postgres_engine):
    pid = _backend_pid(postgres_engine)
    _terminate(postgres_engine, pid)
    # Used again at once: no ping, so the drop shows on this call alone ...
    with pytest.raises(exc.OperationalError):
        _backend_pid(postgres_engine)
    # ... and the next call gets a fresh connection.
    assert _backend_pid(postgres_engine) != pid


def test_an_sqlite_without_returning_is_refused_with_what_to_do():
    from broker.adapters.db.engine import _require_sqlite_returning
    from broker.errors import ConfigError

    with pytest.raises(ConfigError, match=r"SQLite is 3\.34\.1; the broker needs 3\.35") as refused:
        _require_sqlite_returning((3, 34, 1))
    assert "PostgreSQL" in refused.value.hint
    _require_sqlite_returning((3, 35, 0))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_call_whose_connection_dropped_is_a_503_saying_retry(app, make_person):
    """The server dropped the pool's connections (a restart, a failover) while they were in
    steady use: each call that meets a dead one answers 503 (retry; nothing was changed), in
    JSON for the API and as a page for a browser, without the statement or its parameters;
    the pool is replaced, so the next call works."""
    person = make_person("omar@acme.example")
    api = {"Authorization": f"Bearer {person.token}"}
    page = {**api, "Accept": "text/html"}
    client = app.test_client()
    assert client.get("/api/v1/me", headers=api).status_code == 200
    engine = app.extensions["escrow"].engine
    other = create_engine(engine.url, poolclass=NullPool)
    with other.connect() as connection:
        dropped = connection.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )).scalar_one()
    other.dispose()
    assert dropped >= 1
    refused = client.get("/api/v1/me", headers=api)
    assert refused.status_code == 503, refused.get_data(as_text=True)
    assert refused.mimetype == "application/problem+json"
    assert "nothing was changed" in refused.json["detail"]
    assert "retry" in refused.json["hint"]
    text_of_answer = refused.get_data(as_text=True)
    assert "SELECT" not in text_of_answer and person.token.split("_")[1] not in text_of_answer
    assert client.get("/api/v1/me", headers=api).status_code == 200
    # the same for a page
    with other.connect() as connection:
        connection.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ))
    other.dispose()
    shown = client.get("/requests", headers=page)
    assert shown.status_code == 503 and shown.mimetype == "text/html"
    assert "nothing was changed" in shown.get_data(as_text=True)
    assert client.get("/requests", headers=page).status_code == 200
