"""Engine creation and alembic upgrades."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, exc

from broker.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"


def make_engine(database_url: str) -> Engine:
    if database_url.startswith("sqlite"):
        _require_sqlite_returning()
        path = database_url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(database_url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take the write lock at BEGIN instead,
        # so two writers serialise rather than fail on upgrade from a read lock.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    engine = create_engine(database_url)
    _ping_when_idle(engine)
    return engine


SQLITE_RETURNING = (3, 35, 0)  # key releases number themselves with INSERT … RETURNING


def _require_sqlite_returning(version: tuple[int, int, int] = sqlite3.sqlite_version_info) -> None:
    if version < SQLITE_RETURNING:
        raise ConfigError(
            f"this Python's SQLite is {'.'.join(map(str, version))}; the broker needs 3.35 or "
            "newer (RETURNING)",
            hint="use a Python built against a newer SQLite, or set ESCROW_DATABASE_URL to "
            "PostgreSQL",
        )


IDLE_BEFORE_PING_S = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """Test a pooled connection before use if it sat idle for a while (the server may have
    restarted, or a firewall dropped it), and replace it if it is gone.

    Not SQLAlchemy's pool_pre_ping, which costs a round trip on every checkout: a busy broker
    (key releases) reuses its connections within seconds, and a connection that breaks while
    in use fails that call alone (503) and is replaced, the pool with it."""

    @event.listens_for(engine, "checkin")
    def idle_from_now(_dbapi_connection: object, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(
        dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: object
    ) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_BEFORE_PING_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error:
            alive = False
        if not alive:  # the pool discards this connection and checks out a fresh one
            raise exc.DisconnectionError("the database connection was lost while idle")


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    dbapi_conn.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config  # imported on use: it costs ~0.6 s at every CLI start

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)
