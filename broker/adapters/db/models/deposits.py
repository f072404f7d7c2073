"""Tables of what is held: organisations, models, deposited versions and their files,
rekeys, and what fixity last saw of each stored object."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from broker.adapters.db.models.base import Base, UTCDateTime, utcnow

if TYPE_CHECKING:  # imported at run time, these would import each other
    from broker.adapters.db.models.agreements import AgreementRelease
    from broker.adapters.db.models.jobs import Job


class Organisation(Base):
    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    organisation: Mapped[Organisation] = relationship()

    @property
    def full_name(self) -> str:
        return f"{self.organisation.name}/{self.name}"


class Deposit(Base):
    __tablename__ = "deposits"
    __table_args__ = (UniqueConstraint("model_id", "version"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    recipient: Mapped[str] = mapped_column(Text)
    recipient_type: Mapped[str] = mapped_column(String(32))
    extra_recipients: Mapped[str] = mapped_column(Text, default="[]")
    classical: Mapped[bool] = mapped_column(Boolean, default=False)
    wrapped_identity: Mapped[bytes] = mapped_column(LargeBinary)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failure: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure_hint: Mapped[str | None] = mapped_column(Text, nullable=True)
    model: Mapped[Model] = relationship()
    jobs: Mapped[list[Job]] = relationship(viewonly=True, order_by="Job.id")
    files: Mapped[list[DepositFile]] = relationship(
        back_populates="deposit", order_by="DepositFile.idx", cascade="all, delete-orphan"
    )
    # a quarantine (a leak, a dispute): no key release and no new request while set
    quarantined_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    quarantine_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # which set of file objects serves (deposits.header_key): 0 as deposited, n after n rekeys
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # a rekey is running (broker.services.rekey): no key release until it ends
    rekeying_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # set once a release agreement's trigger fired: requests are decided under what it unlocks
    agreement_release: Mapped[AgreementRelease | None] = relationship(viewonly=True)


class DepositFile(Base):
    __tablename__ = "deposit_files"
    __table_args__ = (
        UniqueConstraint("deposit_id", "idx"),
        UniqueConstraint("deposit_id", "path"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deposit_id: Mapped[str] = mapped_column(ForeignKey("deposits.id"))
    idx: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    upload_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    header: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    deposit: Mapped[Deposit] = relationship(back_populates="files")


class Rekey(Base):
    """A version re-encrypted under fresh file keys and a fresh escrow identity (a leak): the
    request, the new identity (wrapped by custody, made at the request so that a resumed job
    encrypts every file to the same one), and how it ended."""

    __tablename__ = "rekeys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deposit_id: Mapped[str] = mapped_column(ForeignKey("deposits.id"), index=True)
    generation: Mapped[int] = mapped_column(Integer)  # the deposit's generation once switched
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(64))
    # queued -> running -> switched (the deposit serves the new objects) -> done | failed
    state: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    recipient: Mapped[str] = mapped_column(Text)
    wrapped_identity: Mapped[bytes] = mapped_column(LargeBinary)
    grants_revoked: Mapped[int] = mapped_column(Integer, default=0)
    old_objects_deleted: Mapped[int] = mapped_column(Integer, default=0)
    old_objects_locked: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The lab's own recipients (given at deposit) get the new headers too, unless the operator
    # dropped them (a leak through the lab's own key).
    keep_lab_recipients: Mapped[bool] = mapped_column(Boolean, default=True)


class RekeyFile(Base):
    """One file re-encrypted and checked by a rekey: its new escrow header (the payload is
    `deposits.payload_key(idx, generation)`); a resumed rekey skips these files."""

    __tablename__ = "rekey_files"
    rekey_id: Mapped[int] = mapped_column(ForeignKey("rekeys.id"), primary_key=True)
    file_idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    header: Mapped[bytes] = mapped_column(LargeBinary)


class StoredObject(Base):
    """What fixity last saw of a good object in one copy (primary or mirror): its size and the
    store's own ETag, compared cheaply (a HEAD) between full checks."""

    __tablename__ = "stored_objects"
    copy: Mapped[str] = mapped_column(String(16), primary_key=True)  # "primary" | "mirror"
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    deposit_id: Mapped[str] = mapped_column(ForeignKey("deposits.id"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    etag: Mapped[str] = mapped_column(String(200))
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
