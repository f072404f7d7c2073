"""The broker's parts wired together once per process: settings, database, store, custody."""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from broker.adapters.custody import open_custody
from broker.adapters.custody.base import KeyCustody
from broker.adapters.db.engine import DatabaseLimits, make_engine
from broker.adapters.db.uow import UnitOfWork
from broker.adapters.objectstore import open_store
from broker.adapters.objectstore.base import ObjectStore
from broker.config import Settings
from broker.domain.notices import NoticeSettings
from broker.errors import ConfigError


@dataclass
class Escrow:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    custody: KeyCustody
    mirror: ObjectStore | None = None  # the second copy (ESCROW_MIRROR_URL), if configured
    # The key of model workers' secrets (broker.services.hosting.worker_secret): derived from
    # the deployment's URL secret, so that every broker process computes the same ones and the
    # database holds none.
    worker_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def uow(self) -> UnitOfWork:
        notices = NoticeSettings(self.settings.public_url) if self.settings.smtp else None
        return UnitOfWork(self.sessions, notices)


def build_escrow(settings: Settings) -> Escrow:
    engine = make_engine(settings.database_url, database_limits(settings))
    url_secret = read_secret_file(settings.url_secret_file)
    store = open_store(
        settings.storage_url,
        data_dir=settings.data_dir,
        url_base=settings.public_url,
        url_secret=url_secret,
        s3_endpoint_url=settings.s3_endpoint_url,
        region=settings.aws_region,
        local_quota_bytes=settings.local_store_quota_bytes or None,
    )
    custody = build_custody(settings)
    mirror = open_mirror(settings) if settings.mirror_url else None
    return Escrow(
        settings, engine, sessionmaker(engine, expire_on_commit=False), store, custody, mirror,
        worker_key=hmac.digest(url_secret, b"escrow model-worker secrets v1", "sha256"),
    )


def build_custody(settings: Settings) -> KeyCustody:
    """The key custody `settings` name (ESCROW_KEY_CUSTODY, ESCROW_KEY_FILE, ESCROW_KMS_KEY_ID):
    the broker's own, and a model worker host's (`escrow hosted worker identity`)."""
    return open_custody(
        settings.key_custody,
        data_dir=settings.data_dir,
        key_file=settings.key_file,
        kms_key_id=settings.kms_key_id,
        region=settings.aws_region,
        endpoint_url=settings.kms_endpoint_url,
    )


def database_limits(settings: Settings) -> DatabaseLimits:
    return DatabaseLimits(
        connect_s=settings.db_connect_timeout_s,
        pool_s=settings.db_pool_timeout_s,
        lock_s=settings.db_lock_timeout_s,
        statement_s=settings.db_statement_timeout_s,
    )


def open_mirror(settings: Settings) -> ObjectStore:
    """The store `ESCROW_MIRROR_URL` names, refused if it is the primary store itself."""
    primary = settings.storage_url or (settings.data_dir / "objects").as_uri()
    if _place(settings.mirror_url, settings.mirror_s3_endpoint_url) == _place(
        primary, settings.s3_endpoint_url
    ):
        raise ConfigError(
            f"ESCROW_MIRROR_URL {settings.mirror_url!r} is the primary store itself",
            hint="point the mirror at another bucket (or prefix) or another directory",
        )
    return open_store(
        settings.mirror_url,
        data_dir=settings.data_dir,
        url_base=settings.public_url,
        url_secret=read_secret_file(settings.url_secret_file),
        s3_endpoint_url=settings.mirror_s3_endpoint_url,
        region=settings.aws_region,
    )


def _place(url: str, endpoint: str | None) -> tuple[str, str]:
    """Where a store URL points, for comparing two of them."""
    if url.startswith("file://"):
        return ("file", os.path.realpath(unquote(urlsplit(url).path)))
    return (endpoint or "aws", url.rstrip("/"))


def create_secret_file(path: Path) -> None:
    """A random 256-bit key in a 0600 file (URL and cookie signing keys, made by `escrow init`)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        return
    with open(path, "x", encoding="ascii", opener=_private_opener) as handle:
        handle.write(secrets.token_hex(32) + "\n")


def read_secret_file(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        raise ConfigError(
            f"signing key {path} does not exist",
            hint="run `escrow init` first (it creates the data directory and its keys)",
        ) from None


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)
