"""Studies of live use: studies, consents, team members, captures and their daily reports."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from broker.adapters.db.models.base import Base, UTCDateTime, utcnow
from broker.adapters.db.models.deposits import Deposit, Model


class Study(Base):
    """A study of live use (broker.domain.studies): registered by a researcher for a model
    (`deposit_id` null: every version) or one version, approved by the model's lab. Captures
    are encrypted to `recipients` (a JSON list of age recipients) and stored under the study."""

    __tablename__ = "studies"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(Text)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    deposit_id: Mapped[str | None] = mapped_column(ForeignKey("deposits.id"), nullable=True)
    recipients: Mapped[str] = mapped_column(Text)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decision_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    model: Mapped[Model] = relationship()
    deposit: Mapped[Deposit | None] = relationship()


class StudyConsent(Base):
    """A person's consent to donate their hosted exchanges to a study, until withdrawn. Its id
    is the participant's pseudonym in the captures (never who they are)."""

    __tablename__ = "study_consents"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    given_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StudyMember(Base):
    """A member of a study's team besides its owner (added by the owner): lists and fetches
    its captures."""

    __tablename__ = "study_members"
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    added_by: Mapped[str] = mapped_column(String(64))


class StudyCapture(Base):
    """One captured exchange: an age file in the store (never plaintext anywhere)."""

    __tablename__ = "study_captures"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), index=True)
    day: Mapped[str] = mapped_column(String(10), index=True)  # UTC, YYYY-MM-DD
    object_key: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StudyCaptureReport(Base):
    """A study's day of captures, counted on the audit log (`study.captures`) once."""

    __tablename__ = "study_capture_reports"
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    captures: Mapped[int] = mapped_column(Integer)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
