"""The unit of work: one database transaction that rolls back unless `commit()` is called.

Audit events are appended inside the same transaction as the change they record, so if the
event cannot be written, the change does not happen either (fail closed).
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from broker.adapters.db.models import AuditEvent, AuditHead
from broker.auditlog.leaf import canonical_json, leaf_hash
from broker.domain.principals import Principal
from broker.errors import Unavailable


class UnitOfWork:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.session.rollback()
        self.session.close()

    def commit(self) -> None:
        try:
            self.session.commit()
        except SQLAlchemyError as error:
            self.session.rollback()
            raise Unavailable(
                "database: the change could not be committed and was not made",
                hint="retry; if it persists, check the database with `escrow admin health`",
            ) from error

    def audit(
        self,
        action: str,
        actor: Principal,
        subject: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Append one event to the audit log in this transaction."""
        try:
            head = self.session.execute(
                select(AuditHead).where(AuditHead.id == 1).with_for_update()
            ).scalar_one()
            now = datetime.now(UTC)
            leaf = canonical_json(
                {
                    "seq": head.size,
                    "time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "action": action,
                    "actor": actor.audit_ref(),
                    "subject": subject or {},
                    "details": details or {},
                }
            )
            event = AuditEvent(
                seq=head.size, leaf=leaf, leaf_hash=leaf_hash(leaf), action=action, created_at=now
            )
            self.session.add(event)
            head.size += 1
            self.session.flush()
        except SQLAlchemyError as error:
            raise Unavailable(
                f"audit log: could not record {action!r}, so the change was not made",
                hint="the audit log must accept every change; check the database and retry",
            ) from error
        return event
