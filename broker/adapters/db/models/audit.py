"""The tamper-evident audit log: its leaves and tree nodes, head, signed checkpoints, and
the signing keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.adapters.db.models.base import Base, UTCDateTime, utcnow


class AuditEvent(Base):
    """One leaf of the audit log: exactly the canonical JSON bytes that were hashed."""

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Copies of what the leaf says, so who-may-see-what and the auditors' filters are queries.
    org: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    user_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    actor: Mapped[str] = mapped_column(String(80), index=True, default="")
    # The Merkle tree's nodes: this leaf completes the subtrees of 2, 4, ... leaves ending at it
    # (one per trailing one bit of seq), their hashes here from level 1 up, 32 bytes each
    # (level 0 is leaf_hash). Stored with the event, so an append writes no extra rows; proofs
    # and old roots are rebuilt from O(log n) of them (services/audit.read_nodes).
    subtrees: Mapped[bytes] = mapped_column(LargeBinary, default=b"")


class AuditHead(Base):
    """A single row locked by every append, so sequence numbers have no gaps or races.

    `frontier` holds the hashes of the tree's largest complete subtrees, left to right, so an
    append computes its new nodes without reading any."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    frontier: Mapped[bytes] = mapped_column(LargeBinary, default=b"")


class AuditCheckpoint(Base):
    """A signed C2SP checkpoint of the log at `size`, exactly as served."""

    __tablename__ = "audit_checkpoints"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class SigningKey(Base):
    __tablename__ = "signing_keys"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    wrapped_private: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
