"""Engine creation, the database's time limits, and alembic upgrades."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import Engine, create_engine, event, exc

from broker.errors import ConfigError
from broker.shipped import migrations_dir

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry


@dataclass(frozen=True)
class DatabaseLimits:
    """How long the broker waits on the database (settings ESCROW_DB_*_S): to connect, for a
    pooled connection, for a row lock, for a statement. Every wait ends."""

    connect_s: int = 5
    pool_s: int = 10
    lock_s: int = 5
    statement_s: int = 15

    @property
    def answer_s(self) -> float:
        """The client's own bound on one round trip: the server's statement timeout, plus a
        margin for the answer to arrive. It ends the calls the server cannot end itself: a
        server that stopped (SIGSTOP, a frozen VM) or a network path that swallows packets."""
        return self.statement_s + 5.0

    @property
    def idle_in_transaction_s(self) -> int:
        """A transaction left idle this long is ended by the server, releasing its locks (the
        audit head's among them) if its client hung or vanished behind a stalled network."""
        return max(60, 4 * self.statement_s)


def make_engine(database_url: str, limits: DatabaseLimits | None = None) -> Engine:
    limits = limits or DatabaseLimits()
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
    engine = create_engine(
        database_url, pool_timeout=limits.pool_s, connect_args=_postgres_limits(limits)
    )
    _ping_when_idle(engine)
    _answer_within(engine, limits.answer_s)
    return engine


def _postgres_limits(limits: DatabaseLimits) -> dict[str, Any]:
    """libpq connection parameters: the server ends a statement, a lock wait or an idle
    transaction that runs too long; TCP keepalives notice a peer that vanished."""
    options = " ".join(
        f"-c {name}={seconds * 1000}"
        for name, seconds in (
            ("statement_timeout", limits.statement_s),
            ("lock_timeout", limits.lock_s),
            ("idle_in_transaction_session_timeout", limits.idle_in_transaction_s),
        )
    )
    return {
        "connect_timeout": limits.connect_s,
        "options": options,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }


# A shorter bound for the calls of this context (a health probe must answer in seconds).
_answer_override: ContextVar[float | None] = ContextVar("database_answer_within", default=None)


@contextmanager
def answer_within(seconds: float) -> Iterator[None]:
    """Database round trips made inside this block wait at most `seconds` for an answer."""
    token = _answer_override.set(seconds)
    try:
        yield
    finally:
        _answer_override.reset(token)


class _BoundedConnection(psycopg.Connection):
    """A psycopg connection whose every round trip waits a bounded time for the server.

    psycopg waits on the socket without end by default; a server that stopped answering (but
    whose kernel still acknowledges our packets) would hold a request forever. On timeout the
    connection is closed (its state is unknown) and OperationalError raised, so SQLAlchemy
    discards it from the pool."""

    answer_s: float = DatabaseLimits().answer_s

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        bound = timeout if timeout is not None else _answer_override.get() or self.answer_s
        try:
            return super().wait(gen, interval, bound)
        except psycopg.errors._WaitTimeout:  # the only signal psycopg gives
            if timeout is not None:
                raise  # the caller asked for its own bound and handles it
            self.close()
            raise psycopg.OperationalError(
                f"the database did not answer within {bound:g} s"
            ) from None


def _answer_within(engine: Engine, answer_s: float) -> None:
    connection_class: type[_BoundedConnection] = type(
        "BoundedConnection", (_BoundedConnection,), {"answer_s": answer_s}
    )

    @event.listens_for(engine, "do_connect")
    def connect(_dialect: object, _record: object, cargs: Any, cparams: Any) -> Any:
        return connection_class.connect(*cargs, **cparams)


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
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)
