"""SQLAlchemy 2 tables. The schema itself changes only through alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Named constraints so SQLite batch migrations can find and alter them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


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


class ServiceToken(Base):
    __tablename__ = "service_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    role: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    organisation: Mapped[Organisation] = relationship()


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


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    deposit_id: Mapped[str] = mapped_column(ForeignKey("deposits.id"), index=True)
    # A verification job checks one file (its `idx`); None: every file of the deposit at once
    # (the jobs queued before migration 0014, and nothing since).
    file_idx: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    run_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Worker(Base):
    """A running job worker, as of its last heartbeat (the operator's view of who is alive)."""

    __tablename__ = "workers"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SigningKey(Base):
    __tablename__ = "signing_keys"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    wrapped_private: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


# --- people (issue 3): users, their erasable personal data, roles, sessions, keys, NDAs -----


class User(Base):
    """A person, known as (issuer, subject). Personal data lives in `UserProfile`."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    profile: Mapped[UserProfile | None] = relationship(
        back_populates="user", uselist=False, cascade="all, delete-orphan"
    )


class UserProfile(Base):
    """Claims and personal data of a user: erasable without touching the audit log, whose
    leaves carry only the user id and a salted commitment (`commitment_salt`)."""

    __tablename__ = "user_profiles"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    email: Mapped[str | None] = mapped_column(Text, nullable=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str | None] = mapped_column(Text, nullable=True)
    affiliations: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    claims: Mapped[str] = mapped_column(Text, default="{}")  # JSON: the last ID token + userinfo
    commitment_salt: Mapped[bytes] = mapped_column(LargeBinary(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user: Mapped[User] = relationship(back_populates="profile")


class Membership(Base):
    """A user's role in an organisation (depositor, reviewer, admin)."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "org_id", "role"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    role: Mapped[str] = mapped_column(String(32))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    organisation: Mapped[Organisation] = relationship()


class GlobalRole(Base):
    """A deployment-wide role (auditor, operator)."""

    __tablename__ = "global_roles"
    __table_args__ = (UniqueConstraint("user_id", "role"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginSession(Base):
    """One login of a user (web cookie or CLI device grant); revoking it ends its tokens."""

    __tablename__ = "login_sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "web" | "device" | "link"
    issuer: Mapped[str] = mapped_column(Text)  # the provider that authenticated this login
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    user: Mapped[User] = relationship()


class UserToken(Base):
    """A broker-issued bearer or refresh token of a login session, stored as SHA-256."""

    __tablename__ = "user_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    session_id: Mapped[str] = mapped_column(ForeignKey("login_sessions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "access" | "refresh"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    session: Mapped[LoginSession] = relationship()


class DeviceAuthorization(Base):
    """RFC 8628: a device code waiting for its user to approve it in the browser."""

    __tablename__ = "device_authorizations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_code_sha256: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    user_code: Mapped[str] = mapped_column(String(16), unique=True)
    client_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16))  # pending | approved | denied | used
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    approved_session_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    interval_s: Mapped[int] = mapped_column(Integer, default=5)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LoginLink(Base):
    """A single-use login URL made by `escrow admin login-link` (bootstrap and demos)."""

    __tablename__ = "login_links"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ResearcherKey(Base):
    """A recipient a researcher receives grants on; it counts only once proven."""

    __tablename__ = "researcher_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    recipient: Mapped[str] = mapped_column(Text)
    key_type: Mapped[str] = mapped_column(String(32))  # x25519 | mlkem768x25519 | ssh-ed25519
    label: Mapped[str] = mapped_column(String(128), default="")
    challenge: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # age file
    challenge_sha256: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    challenge_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    proven_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


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


# --- access (issue 4): requests, reviews, grants, key releases --------------------------------


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


class IdempotencyRecord(Base):
    """A change made under an Idempotency-Key, and its answer (encrypted under a key derived
    from the Idempotency-Key, which only the client knows), for a retry to get that answer."""

    __tablename__ = "idempotency_records"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # hash of caller and key
    request_sha256: Mapped[str] = mapped_column(String(64))
    answer: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


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


class OutboxMessage(Base):
    """An email notification, queued in the transaction of the event that causes it and sent
    by the worker (never inside a request). `dedupe_key` is unique: the same notice to the
    same person is queued once, however often the worker looks."""

    __tablename__ = "outbox_messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # queued | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


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
