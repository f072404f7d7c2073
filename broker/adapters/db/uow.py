"""The unit of work: one database transaction that rolls back unless `commit()` is called.

Audit events are appended inside the same transaction as the change they record, so if the
event cannot be written, the change does not happen either (fail closed).
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from broker.adapters.db.models import AuditEvent, AuditHead, AuditNode, Deposit
from broker.auditlog import merkle
from broker.auditlog.index import index_of
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
        """Append one event to the audit log in this transaction.

        Call it last before `commit()`: it locks the log's head, which every append waits for."""
        subject = self._with_model(subject or {})
        try:
            head = self.session.execute(
                select(AuditHead).where(AuditHead.id == 1).with_for_update()
            ).scalar_one()
            now = datetime.now(UTC)
            actor_ref = actor.audit_ref()
            leaf = canonical_json(
                {
                    "seq": head.size,
                    "time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "action": action,
                    "actor": actor_ref,
                    "subject": subject,
                    "details": details or {},
                }
            )
            digest = leaf_hash(leaf)
            index = index_of(actor_ref, subject)
            event = AuditEvent(
                seq=head.size,
                leaf=leaf,
                leaf_hash=digest,
                action=action,
                created_at=now,
                org=index.org,
                model=index.model,
                user_id=index.user_id,
                actor=index.actor,
            )
            self.session.add(event)
            self._grow_tree(head, digest)
            self.session.flush()
        except SQLAlchemyError as error:
            raise Unavailable(
                f"audit log: could not record {action!r}, so the change was not made",
                hint="the audit log must accept every change; check the database and retry",
            ) from error
        return event

    def _grow_tree(self, head: AuditHead, digest: bytes) -> None:
        nodes, frontier = merkle.append(head.size, split_hashes(head.frontier), digest)
        self.session.execute(
            insert(AuditNode),
            [{"level": level, "idx": idx, "hash": value} for (level, idx), value in nodes],
        )
        head.frontier = b"".join(frontier)
        head.size += 1

    def _with_model(self, subject: dict[str, Any]) -> dict[str, Any]:
        """Events about a deposit also name its model, so auditors can filter by model."""
        deposit_id = subject.get("deposit")
        if deposit_id is None or "model" in subject:
            return subject
        deposit = self.session.get(Deposit, deposit_id)
        if deposit is None:
            return subject
        return {**subject, "model": deposit.model.full_name, "version": deposit.version}


def split_hashes(packed: bytes) -> list[bytes]:
    """The frontier as stored (32-byte hashes back to back) as a list."""
    return [bytes(packed[i : i + 32]) for i in range(0, len(packed), 32)]
