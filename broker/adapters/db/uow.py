"""The unit of work: one database transaction that rolls back unless `commit()` is called.

Audit events are appended inside the same transaction as the change they record, so if the
event cannot be written, the change does not happen either (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, cast

import psycopg
from sqlalchemy import (
    CursorResult,
    Executable,
    Result,
    Row,
    Select,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from broker.adapters.db.models import AuditEvent, AuditHead, Deposit
from broker.auditlog import merkle
from broker.auditlog.index import index_of
from broker.auditlog.leaf import canonical_json, leaf_hash
from broker.domain.events import AuditAction
from broker.domain.notices import NoticeSettings
from broker.domain.principals import Principal
from broker.errors import OutcomeUnknown, Unavailable

NOT_MADE_HINT = "retry; if it persists, check the database with `escrow admin health`"


class CommitHold:
    """Holds the first commit of a request until its answer is ready, so that what `record`
    writes (the answer, kept for a retry with the same Idempotency-Key) lands in the change's
    own transaction. A second commit in the same request cannot be held: the first is then
    committed with `record(session, None)` (the change is known, its answer not yet)."""

    def __init__(self, record: Callable[[Session, Any], None]) -> None:
        self.record = record
        self.held: UnitOfWork | None = None
        self.committed = False

    def take(self, uow: UnitOfWork) -> bool:
        """Hold `uow`'s commit (True), or say it must commit now (False)."""
        if self.held is uow or (self.held is None and not self.committed):
            self.held = uow
            return True
        return False

    def finish(self, answer: Any) -> None:
        """Commit the held change with `answer` recorded beside it (raises like commit())."""
        held, self.held = self.held, None
        if held is None:
            return
        self.committed = True
        try:
            self.record(held.session, answer)
            held.commit_now()
        finally:
            held.session.close()

    def abandon(self) -> None:
        held, self.held = self.held, None
        if held is not None:
            held.session.rollback()
            held.session.close()


commit_hold: ContextVar[CommitHold | None] = ContextVar("commit_hold", default=None)


class UnitOfWork:
    def __init__(
        self, session_factory: sessionmaker[Session], notices: NoticeSettings | None = None
    ) -> None:
        self._session_factory = session_factory
        # Email notifications on (ESCROW_SMTP_URL set): what a change queues in the outbox, in
        # its own transaction (broker.services.notifications). None: nothing is queued.
        self.notices = notices
        self.session: Session
        # The audit head as locked by `locked_with_audit_head`, for the next append in the
        # same transaction: (that transaction, size, frontier).
        self._held_head: tuple[SessionTransaction | None, int, bytes] | None = None
        # PostgreSQL: events to append at commit, in order (arguments of audit_append).
        self._pending: list[dict[str, Any]] = []

    def __enter__(self) -> UnitOfWork:
        hold = commit_hold.get()
        if hold is not None:
            hold.finish(None)  # another transaction must not wait on the held one's locks
        self.session = self._session_factory()
        self._pending = []
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        hold = commit_hold.get()
        if hold is not None and hold.held is self:
            return  # the request commits it, with its answer
        self.session.rollback()
        self.session.close()

    def commit(self) -> None:
        """Commit the transaction (or, inside a request that holds commits, write it and let
        the request commit it with its answer). A failure before COMMIT reached the database
        is "not made"; a connection lost during COMMIT is `OutcomeUnknown`."""
        try:
            self.session.flush()
        except SQLAlchemyError as error:
            self.session.rollback()
            raise _not_made(error) from error
        hold = commit_hold.get()
        if hold is not None and hold.take(self):
            return
        self.commit_now()

    def commit_now(self) -> None:
        try:
            if self._pending:
                self._commit_with_events()
            self.session.commit()
        except SQLAlchemyError as error:
            self._pending = []
            self.session.rollback()
            if _outcome_unknown(error, self.session.get_bind().dialect.name):
                raise _outcome_unknown_error() from error
            raise _not_made(error) from error

    def _commit_with_events(self) -> None:
        """PostgreSQL: append the pending events and COMMIT in one message, so the audit head is
        locked only while the server appends and commits: no client round trip, no client
        scheduling while others wait on it. The events are in the change's transaction: the
        server runs the message's statements in order and skips the rest after an error, so if
        an append fails the COMMIT behind it is not run.

        One simple-query message, its parameters bound by psycopg's `ClientCursor` (quoted by
        libpq's rules), rather than a pipeline of extended-protocol messages: on 2 cores, 16
        writers, that took each event from ~20 system calls to ~6 and the writer's CPU per
        event from ~0.45 to ~0.25 ms (bench/audit.py)."""
        pending, self._pending = self._pending, []
        self.session.flush()
        connection = self.session.connection()
        raw = connection.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        try:
            with psycopg.ClientCursor(raw) as cursor:
                cursor.execute(";".join([_APPEND_SQL] * len(pending) + ["COMMIT"]),
                               [event[name] for event in pending for name in _APPEND_FIELDS])
        except psycopg.Error as error:
            unknown = not error.sqlstate
            if raw.closed:
                connection.invalidate()  # gone: the pool replaces it
            else:
                self.session.rollback()
            if unknown:
                raise _outcome_unknown_error() from error
            actions = ", ".join(repr(event["action"]) for event in pending)
            raise Unavailable(
                f"audit log: could not record {actions}, so the change was not made "
                f"({type(error).__name__})",
                hint="the audit log must accept every change; check the database and retry",
            ) from error

    def rows(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> Result[*tuple[Any, ...]]:
        """Run `statement` as plain SQL in this transaction (after writing pending ORM changes):
        rows, none of the ORM's per-row work. For the calls every request makes."""
        self.session.flush()
        return self.session.connection().execute(statement, parameters)

    def locked_with_audit_head(
        self, statement: Select[*tuple[Any, ...]], parameters: dict[str, Any]
    ) -> Row[Any] | None:
        """The first row of `statement`, made by `with_audit_head`: the caller's row and the
        audit log's head locked in one round trip. The next `audit()` in this transaction
        appends to that head without locking it again."""
        found = self.rows(statement, parameters).first()
        if found is not None:
            self._held_head = (
                self.session.get_transaction(),
                found.audit_size,
                found.audit_frontier,
            )
        return found

    def audit(
        self,
        action: AuditAction,
        actor: Principal,
        subject: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append one event to the audit log in this transaction.

        On PostgreSQL the event is sent at `commit()`, one call of the database's
        `audit_append` in the same round trip as the COMMIT: the log's head, which every append
        waits for, is locked only while the server appends and commits. If the append fails,
        nothing is committed. On SQLite it is appended here (Python computes the leaf and the
        tree; SQLite's writers are serialised from BEGIN anyway): call it last before
        `commit()`; it locks the head (unless `locked_with_audit_head` locked it already)."""
        subject = self._with_model(subject or {})
        name = str(action)  # a plain str: the bytes of the string (tests/audit/test_leaf_bytes)
        actor_ref = actor.audit_ref()
        index = index_of(actor_ref, subject)
        columns = {
            "action": name,
            "org": index.org,
            "model": index.model,
            "user_id": index.user_id,
            "actor": index.actor,
        }
        if self.session.get_bind().dialect.name == "postgresql":
            self._held_head = None  # audit_append locks the head itself
            before, between = leaf_parts(action, actor_ref, subject, details or {})
            self._pending.append({"before": before, "between": between, **columns})
            return
        event = {"action": name, "actor": actor_ref, "subject": subject, "details": details or {}}
        try:
            self._append_now(event, columns)
        except SQLAlchemyError as error:
            raise Unavailable(
                f"audit log: could not record {action!r}, so the change was not made",
                hint="the audit log must accept every change; check the database and retry",
            ) from error

    def _append_now(self, event: dict[str, Any], columns: dict[str, Any]) -> None:
        """SQLite: lock the head, make the leaf with its number and time, grow the tree."""
        size, frontier = self._lock_head()
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        leaf = canonical_json({"seq": size, "time": stamp, **event})
        digest = leaf_hash(leaf)
        (subtrees,), frontier = _grow(size, frontier, [digest])
        row = {"seq": size, "leaf": leaf, "leaf_hash": digest, "created_at": now, **columns}
        head = {"new_size": size + 1, "new_frontier": frontier}
        self._append({**row, "subtrees": subtrees}, head)

    def _lock_head(self) -> tuple[int, bytes]:
        """(size, frontier) of the audit head, locked until this transaction ends. Writes the
        pending ORM changes first (rows() does), so the event's change precedes it."""
        held, self._held_head = self._held_head, None
        if held is not None and held[0] is self.session.get_transaction():
            self.session.flush()
            return held[1], held[2]
        size, frontier = self.rows(_LOCK_HEAD).one()
        return size, frontier

    def _append(self, event: dict[str, Any], head: dict[str, Any]) -> None:
        """Write the event row and move the head (SQLite)."""
        self.rows(_INSERT_EVENT, event)
        self.rows(_UPDATE_HEAD, head)

    def extend_tree(self, digests: Sequence[bytes]) -> list[bytes]:
        """Move the head over leaf hashes whose events the caller writes itself (recovery);
        returns each leaf's `subtrees`, for its event row."""
        size, frontier = self._lock_head()
        subtrees, frontier = _grow(size, frontier, digests)
        self.rows(_UPDATE_HEAD, {"new_size": size + len(digests), "new_frontier": frontier})
        return subtrees

    def _with_model(self, subject: dict[str, Any]) -> dict[str, Any]:
        """Events about a deposit also name its model, so auditors can filter by model."""
        deposit_id = subject.get("deposit")
        if deposit_id is None or "model" in subject:
            return subject
        deposit = self.session.get(Deposit, deposit_id)
        if deposit is None:
            return subject
        return {**subject, "model": deposit.model.full_name, "version": deposit.version}


def _not_made(error: SQLAlchemyError) -> Unavailable:
    return Unavailable(
        "database: the change could not be committed and was not made "
        f"({type(getattr(error, 'orig', error)).__name__})",
        hint=NOT_MADE_HINT,
    )


def _outcome_unknown(error: SQLAlchemyError, dialect: str) -> bool:
    """Whether a failed COMMIT may nevertheless have been applied. An error the server sent
    (it has an SQLSTATE: a serialization failure, a constraint) answers the COMMIT: nothing was
    made. No answer at all (the connection broke or hung) leaves it unknown: the server may
    have committed just before. SQLite has no connection to lose."""
    if dialect == "sqlite" or not isinstance(error, DBAPIError):
        return False
    return not getattr(error.orig, "sqlstate", None)


def database_unavailable(error: OperationalError) -> Unavailable:
    """A call the database could not complete for a reason of the moment (connection lost,
    deadlock, lock or statement timeout, server shutting down): its transaction was rolled
    back, so the caller may retry. Names the driver's error class only: the statement and its
    parameters (ids and hashes of secrets) stay out of answers and logs."""
    return Unavailable(
        f"database: the call could not be completed ({type(error.orig).__name__}); "
        "nothing was changed",
        hint="retry in a moment; if it persists, check the database with `escrow admin health`",
    )


def rowcount(result: Result[*tuple[Any, ...]]) -> int:
    """The rows an UPDATE or DELETE run by session.execute matched (typed as any Result)."""
    return cast(CursorResult[Any], result).rowcount


def with_audit_head(statement: Select[*tuple[Any, ...]], locked: Any) -> Select[*tuple[Any, ...]]:
    """`statement` (one row) also reading the audit head, `locked`'s row and the head locked
    FOR UPDATE in that order, the order of every change that appends (its rows, then the
    head): for `UnitOfWork.locked_with_audit_head`."""
    return (
        statement.add_columns(
            AuditHead.size.label("audit_size"), AuditHead.frontier.label("audit_frontier")
        )
        .join(AuditHead, AuditHead.id == 1)
        .with_for_update(of=[locked, AuditHead])
    )


_LOCK_HEAD = select(AuditHead.size, AuditHead.frontier).where(AuditHead.id == 1).with_for_update()
# A mapped class's __table__ is a Table (typed as any FromClause).
_EVENTS = cast(Table, AuditEvent.__table__)
_HEAD = cast(Table, AuditHead.__table__)
_INSERT_EVENT = insert(_EVENTS)
_UPDATE_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(size=bindparam("new_size"), frontier=bindparam("new_frontier"))
)


# migrations/versions/0012: locks the head, completes, hashes and inserts the leaf, grows the
# tree; positional placeholders, bound by ClientCursor (see _commit_with_events).
_APPEND_FIELDS = ("before", "between", "action", "org", "model", "user_id", "actor")
_APPEND_SQL = f"SELECT audit_append({', '.join(['%s'] * len(_APPEND_FIELDS))})"


def leaf_parts(
    action: str, actor: dict[str, str], subject: dict[str, Any], details: dict[str, Any]
) -> tuple[bytes, bytes]:
    """The canonical leaf of an event around its two values known only under the head's lock:
    `before + str(seq).encode() + between + time + b'"}'` is exactly
    `canonical_json({"seq": seq, "time": time, "action": ..., ...})` (its keys sort as action,
    actor, details, seq, subject, time; RFC 8785 writes an object's members one by one)."""
    head = canonical_json({"action": action, "actor": actor, "details": details})
    return head[:-1] + b',"seq":', b',"subject":' + canonical_json(subject) + b',"time":"'


def _outcome_unknown_error() -> OutcomeUnknown:
    return OutcomeUnknown(
        "database: the connection was lost while the change was being committed, "
        "so it may or may not have been made",
        hint="retry with the same Idempotency-Key header (the CLI does): the broker "
        "answers with the first outcome if the change was made, else makes it",
    )


def _grow(size: int, packed: bytes, digests: Iterable[bytes]) -> tuple[list[bytes], bytes]:
    """Append leaves to the tree of `size` leaves whose frontier the head stores as `packed`:
    each leaf's `subtrees` (the hashes of the subtrees it completes, level 1 up) and the new
    frontier, packed the same way."""
    frontier = split_hashes(packed)
    subtrees = []
    for digest in digests:
        created, frontier = merkle.append(size, frontier, digest)
        subtrees.append(b"".join(value for _, value in created[1:]))  # [0] is the leaf itself
        size += 1
    return subtrees, b"".join(frontier)


def split_hashes(packed: bytes) -> list[bytes]:
    """The frontier as stored (32-byte hashes back to back) as a list."""
    return [bytes(packed[i : i + 32]) for i in range(0, len(packed), 32)]
