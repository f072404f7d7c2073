"""Hosted access: model workers, API keys of the /v1 API, and usage counts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.adapters.db.models.base import Base, UTCDateTime, utcnow


class ModelWorker(Base):
    """A model worker process serving one version on its own loopback URL. The broker sends the
    worker's secret with every call it forwards, so that nothing else can call the worker; the
    secret is derived from the worker's id (broker.services.hosting.worker_secret), not kept."""

    __tablename__ = "model_workers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    deposit_id: Mapped[str] = mapped_column(ForeignKey("deposits.id"), index=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"))
    url: Mapped[str] = mapped_column(Text)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class HostedKey(Base):
    """An API key for the /v1 API, bound to one inference grant of its owner; stored as
    SHA-256 (broker.domain.secrets), shown once."""

    __tablename__ = "hosted_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # when it last authenticated a request, to the minute (hosted_keys.authenticate)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class HostedUsage(Base):
    """A grant's use of the hosted API in one window: a minute (the requests counted against
    `requests_per_minute`) or a UTC day (requests and tokens; `reported_at` once the day's
    `hosted.usage` event is on the log). Incremented by UPSERT, so brokers share the count."""

    __tablename__ = "hosted_usage"
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)  # "minute" | "day"
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
