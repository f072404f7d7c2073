"""Settings from `ESCROW_*` environment variables, with embedded defaults under the data dir.

Embedded defaults (no variable set): SQLite at `$ESCROW_DATA_DIR/escrow.db`, the local object
store at `$ESCROW_DATA_DIR/objects/`, and a local master key at `$ESCROW_DATA_DIR/keys/`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from broker.deployment import Deployment, read_deployment
from broker.errors import ConfigError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"
DEFAULT_OIDC_SCOPES = "openid email profile"
AFFILIATION_SCOPE = "eduperson_scoped_affiliation"  # requested too when affiliations count


@dataclass(frozen=True)
class OidcIssuer:
    """One OpenID Provider people log in with, and what it is authoritative for: the email
    domains and `eduperson_scoped_affiliation` scopes it may vouch for (nothing by default)."""

    name: str
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    email_domains: tuple[str, ...] = ()
    affiliation_scopes: tuple[str, ...] = ()
    scopes: str = DEFAULT_OIDC_SCOPES  # + eduperson_scoped_affiliation with affiliation_scopes


@dataclass(frozen=True)
class SmtpSettings:
    """Where the worker sends email notifications (ESCROW_SMTP_URL), and as whom."""

    host: str
    port: int
    security: str  # "plain" | "starttls" | "ssl"
    sender: str
    username: str = ""
    password: str = field(default="", repr=False)
    timeout_s: int = 10  # connect, and every command after it

    @property
    def where(self) -> str:
        """The server as named in messages and errors: never the password."""
        return f"{self.host}:{self.port} ({self.security})"


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
    upload_url_ttl_s: int = 3600
    download_url_ttl_s: int = 900
    checkpoint_interval_s: int = 60
    # durability (README "Fixity", "A second copy", "Immutability")
    mirror_url: str = ""
    mirror_s3_endpoint_url: str | None = None
    object_lock_days: int = 0
    fixity_interval_s: int = 86400
    fixity_max_bytes_per_s: int = 50_000_000
    fixity_limit: int = 0
    # jobs (README "Jobs"): a claimed job's lease, renewed by its worker's heartbeat
    job_lease_s: int = 30
    job_max_attempts: int = 5
    job_backoff_s: int = 10
    # database time limits (README "Time limits")
    db_connect_timeout_s: int = 5
    db_statement_timeout_s: int = 15
    db_lock_timeout_s: int = 5
    db_pool_timeout_s: int = 10
    run_worker_in_process: bool = True
    # grant close-outs (README "Close-out"): overdue this many days after a grant ended
    closeout_overdue_days: int = 14
    kms_endpoint_url: str | None = None  # a KMS other than AWS's own (LocalStack, a VPC endpoint)
    local_store_quota_bytes: int = 0  # 0: none; else the local store refuses past it, as full
    config_file: Path | None = None
    # `$ESCROW_DATA_DIR/deployment.json` (broker.deployment), None before `escrow init`
    deployment: Deployment | None = None
    oidc_issuers: tuple[OidcIssuer, ...] = ()
    # email notifications (README "Notifications"): None = off, nothing is queued
    smtp: SmtpSettings | None = None
    notify_expiring_days: int = 3
    notify_max_attempts: int = 8
    notify_backoff_s: int = 60

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


def _policy_dir(env: Mapping[str, str]) -> Path:
    """ESCROW_POLICY_DIR, or the policies shipped in the package (not a folder of the cwd)."""
    if env.get("ESCROW_POLICY_DIR"):
        return Path(env["ESCROW_POLICY_DIR"])
    from broker.shipped import default_policy_dir

    return default_policy_dir()


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "")
    if not value:
        return default
    if not value.isdigit() or int(value) == 0:
        raise ConfigError(
            f"{name}={value!r} is not a positive whole number",
            hint=f"unset it or give e.g. {default}",
        )
    return int(value)


def _whole_number(env: Mapping[str, str], name: str, default: int, most: int) -> int:
    """A setting of 0..most, where 0 usually means "off" or "no limit"."""
    value = env.get(name, "")
    if not value:
        return default
    if not value.isdigit() or int(value) > most:
        raise ConfigError(
            f"{name}={value!r} is not a whole number from 0 to {most}",
            hint=f"unset it or give e.g. {default}",
        )
    return int(value)


def _durability(env: Mapping[str, str], storage_url: str) -> dict[str, Any]:
    """The mirror, Object Lock and fixity settings (README: "Durability")."""
    mirror_url = env.get("ESCROW_MIRROR_URL", "")
    if mirror_url and not mirror_url.startswith(("s3://", "file://")):
        raise ConfigError(
            f"ESCROW_MIRROR_URL: unsupported scheme in {mirror_url!r}",
            hint="use s3://bucket/prefix or file:///path (another bucket or a local directory)",
        )
    lock_days = _whole_number(env, "ESCROW_OBJECT_LOCK_DAYS", 0, 36500)
    if lock_days and not storage_url.startswith("s3://"):
        raise ConfigError(
            f"ESCROW_OBJECT_LOCK_DAYS={lock_days} needs an S3 store: the local store cannot "
            "make files undeletable",
            hint="set ESCROW_STORAGE_URL=s3://bucket/prefix (a bucket with Object Lock "
            "enabled), or unset ESCROW_OBJECT_LOCK_DAYS",
        )
    return {
        "mirror_url": mirror_url,
        "mirror_s3_endpoint_url": env.get("ESCROW_MIRROR_S3_ENDPOINT_URL")
        or env.get("ESCROW_S3_ENDPOINT_URL")
        or None,
        "object_lock_days": lock_days,
        "fixity_interval_s": _whole_number(env, "ESCROW_FIXITY_INTERVAL_S", 86400, 10**9),
        "fixity_max_bytes_per_s": _whole_number(
            env, "ESCROW_FIXITY_MAX_BYTES_PER_S", 50_000_000, 10**12
        ),
        "fixity_limit": _whole_number(env, "ESCROW_FIXITY_LIMIT", 0, 10**9),
    }


def _jobs_and_database(env: Mapping[str, str]) -> dict[str, Any]:
    """The job queue's lease and retry settings and the database's time limits."""
    lease = _whole_number(env, "ESCROW_JOB_LEASE_S", 30, 3600)
    if lease < 3:
        raise ConfigError(
            f"ESCROW_JOB_LEASE_S={lease} is too short: a worker renews its lease every third of "
            "it, and a lease under 3 s lapses on any pause",
            hint="give 3 to 3600 seconds (30 by default)",
        )
    return {
        "job_lease_s": lease,
        "job_max_attempts": _positive_int(env, "ESCROW_JOB_MAX_ATTEMPTS", 5),
        "job_backoff_s": _whole_number(env, "ESCROW_JOB_BACKOFF_S", 10, 86400),
        "db_connect_timeout_s": _positive_int(env, "ESCROW_DB_CONNECT_TIMEOUT_S", 5),
        "db_statement_timeout_s": _positive_int(env, "ESCROW_DB_STATEMENT_TIMEOUT_S", 15),
        "db_lock_timeout_s": _positive_int(env, "ESCROW_DB_LOCK_TIMEOUT_S", 5),
        "db_pool_timeout_s": _positive_int(env, "ESCROW_DB_POOL_TIMEOUT_S", 10),
    }


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
    deployment = read_deployment(data_dir)
    public_url = (
        env.get("ESCROW_PUBLIC_URL")
        or (deployment.public_url if deployment else DEFAULT_PUBLIC_URL)
    ).rstrip("/")
    config_file = Path(env["ESCROW_CONFIG_FILE"]) if env.get("ESCROW_CONFIG_FILE") else None
    return Settings(
        data_dir=data_dir,
        database_url=env.get("ESCROW_DATABASE_URL", f"sqlite:///{data_dir / 'escrow.db'}"),
        storage_url=storage_url,
        s3_endpoint_url=env.get("ESCROW_S3_ENDPOINT_URL") or None,
        key_custody=custody,
        key_file=Path(env.get("ESCROW_KEY_FILE", str(data_dir / "keys" / "master.key"))),
        kms_key_id=env.get("ESCROW_KMS_KEY_ID") or None,
        aws_region=env.get("ESCROW_AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        policy_dir=_policy_dir(env),
        public_url=public_url,
        origin=_origin(env, deployment, public_url),
        checkpoint_interval_s=_positive_int(env, "ESCROW_CHECKPOINT_INTERVAL_S", 60),
        **_durability(env, storage_url),
        **_jobs_and_database(env),
        run_worker_in_process=env.get("ESCROW_IN_PROCESS_WORKER", "1") == "1",
        closeout_overdue_days=_positive_int(env, "ESCROW_CLOSEOUT_OVERDUE_DAYS", 14),
        kms_endpoint_url=env.get("ESCROW_KMS_ENDPOINT_URL") or None,
        local_store_quota_bytes=_whole_number(env, "ESCROW_LOCAL_STORE_QUOTA_BYTES", 0, 2**62),
        config_file=config_file,
        deployment=deployment,
        oidc_issuers=_oidc_issuers(env, config_file),
        **_notifications(env),
    )


def _origin(env: Mapping[str, str], deployment: Deployment | None, public_url: str) -> str:
    """The checkpoint origin: the one recorded at init; before init, ESCROW_ORIGIN or one made
    from the public URL. A later ESCROW_ORIGIN that differs is refused: the origin names the
    audit log, and a log signed under two names verifies under neither."""
    wanted = env.get("ESCROW_ORIGIN", "")
    if deployment is None:
        return wanted or "weights-escrow/" + public_url.split("://", 1)[-1]
    if wanted and wanted != deployment.origin:
        raise ConfigError(
            f"ESCROW_ORIGIN={wanted!r} differs from this deployment's origin "
            f"{deployment.origin!r}, fixed at `escrow init` (in {deployment.data_dir}): "
            "the origin names the audit log and never changes",
            hint="unset ESCROW_ORIGIN (the recorded origin is always used); to start a "
            "deployment with another origin, run `escrow init` with it in a new ESCROW_DATA_DIR",
        )
    return deployment.origin


# --- OpenID Providers: one from ESCROW_OIDC_*, any number from the config file's `oidc:` list --

_OIDC_REQUIRED = ("name", "issuer", "client_id", "client_secret")
_OIDC_KEYS = {*_OIDC_REQUIRED, "email_domains", "affiliation_scopes", "scopes"}
_OIDC_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def _oidc_issuers(env: Mapping[str, str], config_file: Path | None) -> tuple[OidcIssuer, ...]:
    entries: list[tuple[str, dict[str, Any]]] = []
    if env.get("ESCROW_OIDC_ISSUER"):
        issuer = env["ESCROW_OIDC_ISSUER"]
        entry: dict[str, Any] = {
            "name": env.get("ESCROW_OIDC_NAME") or urlsplit(issuer).hostname or "oidc",
            "issuer": issuer,
            "client_id": env.get("ESCROW_OIDC_CLIENT_ID", ""),
            "client_secret": env.get("ESCROW_OIDC_CLIENT_SECRET", ""),
            "email_domains": env.get("ESCROW_OIDC_EMAIL_DOMAINS", "").split(","),
            "affiliation_scopes": env.get("ESCROW_OIDC_AFFILIATION_SCOPES", "").split(","),
        }
        if env.get("ESCROW_OIDC_SCOPES"):
            entry["scopes"] = env["ESCROW_OIDC_SCOPES"]
        entries.append(("ESCROW_OIDC_*", entry))
    if config_file is not None:
        for index, entry in enumerate(_config_document(config_file).get("oidc") or []):
            entries.append((f"{config_file}: oidc[{index}]", entry))
    issuers = tuple(_oidc_issuer(where, entry) for where, entry in entries)
    for attribute in ("name", "issuer"):
        values = [getattr(issuer, attribute) for issuer in issuers]
        if len(set(values)) != len(values):
            raise ConfigError(
                f"OpenID Providers: the same {attribute} is configured twice in {values}",
                hint="give each provider its own name and issuer",
            )
    return issuers


def _config_document(path: Path) -> dict[str, Any]:
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(
            f"ESCROW_CONFIG_FILE: cannot read {path}: {error}",
            hint="point ESCROW_CONFIG_FILE at a readable YAML file",
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("oidc", []), list):
        raise ConfigError(
            f"{path}: expected a mapping with an `oidc:` list",
            hint="oidc: [{name, issuer, client_id, client_secret, email_domains, "
            "affiliation_scopes}]",
        )
    return document


def _oidc_issuer(where: str, entry: object) -> OidcIssuer:
    if not isinstance(entry, dict) or set(entry) - _OIDC_KEYS:
        unknown = sorted(set(entry) - _OIDC_KEYS) if isinstance(entry, dict) else entry
        raise ConfigError(
            f"{where}: expected a mapping of {sorted(_OIDC_KEYS)}, found {unknown!r}",
            hint="check the spelling of each key",
        )
    for key in _OIDC_REQUIRED:
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ConfigError(f"{where}: `{key}` is missing", hint=f"set {key} (a string)")
    name = entry["name"]
    if not set(name) <= _OIDC_NAME_CHARS or len(name) > 64:
        raise ConfigError(
            f"{where}: provider name {name!r} is not a short lowercase word",
            hint="use lowercase letters, digits, '-', '_' or '.' (it appears in login URLs)",
        )
    check_provider_url(f"{where}: issuer", entry["issuer"])
    affiliation_scopes = _domains(where, "affiliation_scopes", entry.get("affiliation_scopes"))
    # Providers (SATOSA, Shibboleth, Keycloak's eduGAIN set-ups) release the affiliation claim
    # under its own scope: ask for it wherever affiliations are to count. `scopes` overrides.
    default = DEFAULT_OIDC_SCOPES + (f" {AFFILIATION_SCOPE}" if affiliation_scopes else "")
    scopes = entry.get("scopes", default)
    scopes = " ".join(scopes) if isinstance(scopes, list) else str(scopes)
    if "openid" not in scopes.split():
        raise ConfigError(f"{where}: scopes {scopes!r} lack 'openid'", hint="add openid")
    return OidcIssuer(
        name=name,
        issuer=entry["issuer"],
        client_id=entry["client_id"],
        client_secret=entry["client_secret"],
        email_domains=_domains(where, "email_domains", entry.get("email_domains")),
        affiliation_scopes=affiliation_scopes,
        scopes=scopes,
    )


def _domains(where: str, key: str, values: object) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(
            f"{where}: `{key}` must be a list of domains, found {values!r}",
            hint=f"{key}: [uni.example, dept.uni.example]",
        )
    domains = tuple(sorted({v.strip().lower().lstrip("@") for v in values if v.strip()}))
    for domain in domains:
        if "@" in domain or " " in domain or "." not in domain:
            raise ConfigError(
                f"{where}: `{key}` has {domain!r}, not a domain name",
                hint="list bare domain names such as uni.example",
            )
    return domains


def check_provider_url(what: str, url: str) -> None:
    """OpenID discovery and the provider's endpoints only over https; plain http only to a
    loopback address (tests, a provider on the same host)."""
    parts = urlsplit(url)
    secure = parts.scheme == "https" and bool(parts.hostname)
    loopback = parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
    if not (secure or loopback) or parts.query or parts.fragment or parts.username:
        raise ConfigError(
            f"{what}: {url!r} is not an https URL",
            hint="OpenID Providers are reached over https only (plain http only on loopback: "
            "127.0.0.1, localhost, ::1), without query, fragment or credentials",
        )


# --- email notifications: ESCROW_SMTP_URL, ESCROW_SMTP_FROM, ESCROW_NOTIFY_* -----------------

_SMTP_SCHEMES = {"smtp": ("plain", 25), "smtp+starttls": ("starttls", 587), "smtps": ("ssl", 465)}


def _notifications(env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "smtp": _smtp(env),
        "notify_expiring_days": _whole_number(env, "ESCROW_NOTIFY_EXPIRING_DAYS", 3, 365),
        "notify_max_attempts": _positive_int(env, "ESCROW_NOTIFY_MAX_ATTEMPTS", 8),
        "notify_backoff_s": _whole_number(env, "ESCROW_NOTIFY_BACKOFF_S", 60, 86400),
    }


def _smtp(env: Mapping[str, str]) -> SmtpSettings | None:
    url = env.get("ESCROW_SMTP_URL", "")
    if not url:
        return None
    parts = urlsplit(url)
    shown = _without_password(url)
    hint = ("e.g. smtp://127.0.0.1:25, smtp+starttls://USER:PASSWORD@mail.example:587 or "
            "smtps://USER:PASSWORD@mail.example:465 (unset: no notifications)")
    if parts.scheme not in _SMTP_SCHEMES:
        raise ConfigError(f"ESCROW_SMTP_URL: unsupported scheme in {shown!r}", hint=hint)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"ESCROW_SMTP_URL: the port of {shown!r} is not a number",
                          hint=hint) from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"ESCROW_SMTP_URL: {shown!r} is not smtp://HOST:PORT", hint=hint)
    security, default_port = _SMTP_SCHEMES[parts.scheme]
    if parts.password and security == "plain" and parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"ESCROW_SMTP_URL: {shown!r} would send the password unencrypted",
            hint="use smtp+starttls:// or smtps:// (plain smtp:// with a password only on "
            "loopback)",
        )
    sender = env.get("ESCROW_SMTP_FROM", "").strip()
    if "@" not in sender or any(c.isspace() or c in "<>," for c in sender):
        raise ConfigError(
            f"ESCROW_SMTP_FROM={sender!r} is not an email address (ESCROW_SMTP_URL is set)",
            hint="set ESCROW_SMTP_FROM to the sender, e.g. escrow@lab.example",
        )
    return SmtpSettings(
        host=parts.hostname,
        port=port or default_port,
        security=security,
        sender=sender,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        timeout_s=_positive_int(env, "ESCROW_SMTP_TIMEOUT_S", 10),
    )


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    try:
        if parts.password is None:
            return url
    except ValueError:
        return "(unreadable URL)"
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
