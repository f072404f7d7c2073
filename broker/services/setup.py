"""Setting up a deployment: data directory, keys and schema. Safe to run again."""

from __future__ import annotations

from broker.adapters.custody.local import LocalCustody
from broker.adapters.db.engine import upgrade
from broker.config import Settings
from broker.container import Escrow, build_escrow, create_secret_file
from broker.domain.principals import OPERATOR
from broker.services.signing import (
    KEYS_PREFIX,
    ensure_signing_keys,
    has_signing_keys,
    mirror_keys,
)


def initialise(settings: Settings, migrate: bool = True) -> tuple[Escrow, list[str]]:
    """Create what is missing; return the escrow and a line per thing created."""
    created = []
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    create_secret_file(settings.url_secret_file)
    create_secret_file(settings.session_secret_file)
    if settings.key_custody == "local" and not settings.key_file.exists():
        LocalCustody.create_key_file(settings.key_file)
        created.append(f"created master key {settings.key_file} (mode 0600): back it up offline")
    if migrate:
        upgrade(settings.database_url)
    escrow = build_escrow(settings)
    with escrow.uow() as uow:
        if not has_signing_keys(uow) and escrow.store.list_keys(KEYS_PREFIX):
            created.append(
                "this database is new but the store holds a deployment's signing keys: "
                "run `escrow recover` to rebuild the database from the store"
            )
            return escrow, created
        ensure_signing_keys(uow, escrow.custody, OPERATOR)
    with escrow.uow() as uow:
        mirror_keys(uow, escrow.store)
    return escrow, created
