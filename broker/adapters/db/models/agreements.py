"""Release agreements: their texts, lab check-ins, trustees' votes and vote challenges,
and releases."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from broker.adapters.db.models.base import Base, UTCDateTime, utcnow
from broker.adapters.db.models.deposits import Deposit


class ReleaseAgreement(Base):
    """One text of a version's release agreement; the highest `number` is the one in force.
    A sealed version's agreement is replaced only by an amendment its own rule allows."""

    __tablename__ = "release_agreements"
    __table_args__ = (UniqueConstraint("deposit_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deposit_id: Mapped[str] = mapped_column(ForeignKey("deposits.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1, then 2 for the first amendment, ...
    text: Mapped[str] = mapped_column(Text)  # the exact file, UTF-8
    sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(80))  # the actor's audit reference
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lab_released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deposit: Mapped[Deposit] = relationship()


class AgreementCheckin(Base):
    """A lab's admin said "we are here": resets every `lab_silence` trigger of the lab."""

    __tablename__ = "agreement_checkins"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AgreementVote(Base):
    """A trustee's signed vote: to release (`proposal_sha256` null) or for one amendment text.
    Withdrawn votes keep their row (`withdrawn_at`): the log and the page show both."""

    __tablename__ = "agreement_votes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agreement_id: Mapped[int] = mapped_column(ForeignKey("release_agreements.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    trustee: Mapped[str] = mapped_column(String(320))  # the e-mail address the agreement names
    proposal_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str] = mapped_column(Text)  # exactly what was signed or answered
    proof: Mapped[str] = mapped_column(String(16), default="ssh-signature")  # or age-challenge
    key_id: Mapped[str] = mapped_column(String(32))  # the proven key that made the proof
    ssh_signature: Mapped[str | None] = mapped_column(Text, nullable=True)
    ssh_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    challenge_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AgreementVoteChallenge(Base):
    """A secret encrypted to a trustee's proven key, bound to one vote message: answering it
    is the trustee's proof for that one vote. Only the secret's SHA-256 is kept; single use."""

    __tablename__ = "agreement_vote_challenges"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agreement_id: Mapped[int] = mapped_column(ForeignKey("release_agreements.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    key_id: Mapped[str] = mapped_column(ForeignKey("researcher_keys.id"))
    proposal_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str] = mapped_column(Text)  # the vote message the secret is bound to
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AgreementRelease(Base):
    """A version released under its agreement: permanent (nothing deletes or undoes it)."""

    __tablename__ = "agreement_releases"
    deposit_id: Mapped[str] = mapped_column(ForeignKey("deposits.id"), primary_key=True)
    agreement_id: Mapped[int] = mapped_column(ForeignKey("release_agreements.id"))
    trigger: Mapped[str] = mapped_column(String(64))
    unlocks: Mapped[str] = mapped_column(String(128))  # a policy id, or "public"
    released_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    agreement: Mapped[ReleaseAgreement] = relationship()
