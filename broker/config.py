"""Settings from `ESCROW_*` environment variables, with embedded defaults under the data dir.

Embedded defaults (no variable set): SQLite at `$ESCROW_DATA_DIR/escrow.db`, the local object
store at `$ESCROW_DATA_DIR/objects/`, and a local master key at `$ESCROW_DATA_DIR/keys/`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from broker.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    storage_url: str
    s3_endpoint_url: str | None
    key_custody: str
    key_file: Path
    kms_key_id: str | None
    aws_region: str | None
    policy_dir: Path
    public_url: str
    origin: str
    token_ttl_days: int = 90
    upload_url_ttl_s: int = 3600
    download_url_ttl_s: int = 900
    run_worker_in_process: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url_secret_file(self) -> Path:
        return self.data_dir / "keys" / "url-signing.key"

    @property
    def session_secret_file(self) -> Path:
        return self.data_dir / "keys" / "session-signing.key"

    @property
    def secure_cookies(self) -> bool:
        """Secure cookies whenever the public URL is https (plain http only on loopback)."""
        return self.public_url.startswith("https://")

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("ESCROW_DATA_DIR", "./escrow-data")).resolve()
    custody = env.get("ESCROW_KEY_CUSTODY", "local")
    if custody not in ("local", "aws-kms"):
        raise ConfigError(
            f"ESCROW_KEY_CUSTODY: unknown backend {custody!r}",
            hint="use 'local' (a key file made by `escrow init`) or 'aws-kms'",
        )
    if custody == "aws-kms" and not env.get("ESCROW_KMS_KEY_ID"):
        raise ConfigError(
            "ESCROW_KEY_CUSTODY=aws-kms needs ESCROW_KMS_KEY_ID",
            hint="set ESCROW_KMS_KEY_ID to the KMS key id or ARN that wraps deposit identities",
        )
    storage_url = env.get("ESCROW_STORAGE_URL", "")
    if storage_url and not storage_url.startswith(("s3://", "file://")):
        raise ConfigError(
            f"ESCROW_STORAGE_URL: unsupported scheme in {storage_url!r}",
            hint="use s3://bucket/prefix, file:///path, or leave it unset for the local store",
        )
    public_url = env.get("ESCROW_PUBLIC_URL", "http://127.0.0.1:8080").rstrip("/")
    return Settings(
        data_dir=data_dir,
        database_url=env.get("ESCROW_DATABASE_URL", f"sqlite:///{data_dir / 'escrow.db'}"),
        storage_url=storage_url,
        s3_endpoint_url=env.get("ESCROW_S3_ENDPOINT_URL") or None,
        key_custody=custody,
        key_file=Path(env.get("ESCROW_KEY_FILE", str(data_dir / "keys" / "master.key"))),
        kms_key_id=env.get("ESCROW_KMS_KEY_ID") or None,
        aws_region=env.get("ESCROW_AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        policy_dir=Path(env.get("ESCROW_POLICY_DIR", "policies")),
        public_url=public_url,
        origin=env.get("ESCROW_ORIGIN", "weights-escrow/" + public_url.split("://", 1)[-1]),
        run_worker_in_process=env.get("ESCROW_IN_PROCESS_WORKER", "1") == "1",
    )
