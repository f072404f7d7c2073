"""Access (issue 4): NDA signatures, requests, reviews, grants, their closeouts, and key
releases."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from broker.adapters.db.models.base import Base, UTCDateTime, utcnow
from broker.adapters.db.models.deposits import Deposit
from broker.adapters.db.models.people import User


class NdaSignature(Base):
    """A user's signature of one exact NDA text (identified by the SHA-256 of its bytes)."""

    __tablename__ = "nda_signatures"
    __table_args__ = (UniqueConstraint("user_id", "nda_id", "text_sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    nda_id: Mapped[str] = mapped_column(String(128))
    nda_version: Mapped[str] = mapped_column(String(64))
    text_sha256: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ssh_signature: Mapped[str | None] = mapped_column(Text, nullable=True)
    ssh_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class NdaSignatureContext(Base):
    """Personal data of a signature (typed name, IP, user agent): erasable, off the log."""

    __tablename__ = "nda_signature_contexts"
    signature_id: Mapped[int] = mapped_column(ForeignKey("nda_signatures.id"), primary_key=True)
    typed_name: Mapped[str] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(Text, nullable=True)


class AccessRequest(Base):
    """A researcher's request for a deposit; the decision records the policy's SHA-256."""

    __tablename__ = "access_requests"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    deposit_id: Mapped[str] = mapped_column(ForeignKey("deposits.id"), index=True)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("researcher_keys.id"), nullable=True)
    purpose: Mapped[str] = mapped_column(Text)
    days_requested: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending|approved|denied|withdrawn
    policy_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    policy_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decision: Mapped[str] = mapped_column(Text, default="{}")  # JSON: missing, reasons
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A renewal asks to continue this grant (same key, from its expiry); indexed because every
    # renewal looks for a pending or granted renewal of the same grant.
    renews_grant_id: Mapped[str | None] = mapped_column(
        ForeignKey("grants.id", use_alter=True), nullable=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(16), default="weights")  # domain.hosting.KINDS
    deposit: Mapped[Deposit] = relationship()
    user: Mapped[User] = relationship()


class Review(Base):
    """One reviewer's approval or denial of a request."""

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("request_id", "reviewer_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("access_requests.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    approve: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Grant(Base):
    """Time-limited access to one deposit for one person: a grant that releases file keys
    (weights, hosting) is pinned to a researcher key at approval; a grant of hosted access
    (inference, internals) has no key (key_id and recipient null): nothing is released to it."""

    __tablename__ = "grants"
    __table_args__ = (
        CheckConstraint(
            "kind NOT IN ('weights', 'hosting') OR (key_id IS NOT NULL AND recipient IS NOT NULL)",
            name="releasing_kind_has_key",
        ),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("access_requests.id"), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    deposit_id: Mapped[str] = mapped_column(ForeignKey("deposits.id"), index=True)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("researcher_keys.id"), nullable=True)
    recipient: Mapped[str | None] = mapped_column(Text, nullable=True)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    releases_per_file: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(16), default="weights")  # domain.hosting.KINDS
    # An inference grant's quotas, from its policy's grant section (null: no limit)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    deposit: Mapped[Deposit] = relationship()


class GrantCloseout(Base):
    """The researcher's attestation that an ended grant's weights were deleted. The typed name
    is personal data: it stays here, never on the audit log (like an NDA's typed name)."""

    __tablename__ = "grant_closeouts"
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), primary_key=True)
    typed_name: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)  # exactly what was attested (and signed)
    ssh_signature: Mapped[str | None] = mapped_column(Text, nullable=True)
    ssh_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    attested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KeyRelease(Base):
    """One header issued for one file under a grant: a key release on the audit log."""

    __tablename__ = "key_releases"
    # A release takes the file's next number, found through this constraint's index; no two
    # releases can hold the same number, whatever the concurrency.
    __table_args__ = (UniqueConstraint("grant_id", "file_idx", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"))
    file_idx: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)  # 1 for the file's first release, then 2, ...
    header_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
