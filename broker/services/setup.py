"""Setting up a deployment: data directory, keys and schema. Safe to run again."""

from __future__ import annotations

from dataclasses import replace

from broker.adapters.custody.local import LocalCustody
from broker.adapters.db.engine import upgrade
from broker.config import Settings
from broker.container import Escrow, build_escrow, create_secret_file
from broker.deployment import DEPLOYMENT_FILE, record_deployment
from broker.domain.principals import OPERATOR
from broker.services.audit import CHECKPOINT_PREFIX
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
    escrow = _recorded(escrow, created)
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


def _recorded(escrow: Escrow, created: list[str]) -> Escrow:
    """The escrow with this deployment's record (`deployment.json`): written now on a first
    init, with the origin of the checkpoints already in the store if there are any (a
    deployment being rebuilt from its bucket keeps its log's name), else the configured one."""
    settings = escrow.settings
    if settings.deployment is None:
        origin = _origin_in_store(escrow) or settings.origin
        deployment, _ = record_deployment(settings.data_dir, origin, settings.public_url)
        created.append(
            f"recorded the deployment in {settings.data_dir / DEPLOYMENT_FILE} "
            f"(origin {deployment.origin!r}, fixed from now on)"
        )
        settings = replace(settings, deployment=deployment, origin=deployment.origin)
    return replace(escrow, settings=settings)


def _origin_in_store(escrow: Escrow) -> str | None:
    """The origin line of the newest checkpoint mirrored to the store, if any (recovery checks
    every checkpoint's signature under it)."""
    sizes = {
        int(key.rsplit("/", 1)[-1]): key
        for key in escrow.store.list_keys(CHECKPOINT_PREFIX)
        if key.rsplit("/", 1)[-1].isdigit()
    }
    newest = sizes[max(sizes)] if sizes else None
    if newest is None:
        return None
    first_line = escrow.store.get_bytes(newest).decode(errors="replace").split("\n", 1)[0]
    return first_line.strip() or None
