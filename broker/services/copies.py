"""The second copy and Object Lock: which objects a deposit has, copying them to the mirror
(`ESCROW_MIRROR_URL`), locking them (`ESCROW_OBJECT_LOCK_DAYS`), and recording what each copy
holds so that fixity can compare the stores' own checksums between full checks.

Ciphertext only: objects are streamed from one store into the other (`put_stream`), one block or
part at a time; the broker decrypts nothing to copy and never holds a whole payload in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from broker.adapters.db.models import Deposit, DepositFile, StoredObject
from broker.adapters.db.uow import UnitOfWork
from broker.adapters.objectstore.base import ObjectInfo, ObjectStore, SupportsRetention
from broker.container import Escrow
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import Principal
from broker.domain.throttle import Throttle
from broker.errors import EscrowError, NotFound, ObjectMissing, StorageError
from broker.services import audit
from broker.services.deposits import deposit_prefix, header_key, identity_object, payload_key

log = logging.getLogger(__name__)

PRIMARY, MIRROR, DATABASE = "primary", "mirror", "database"
MANIFEST, SIGNATURE, IDENTITY = "manifest.json", "manifest.sig", "identity.wrapped"
# Beside the deposits, recovery needs the audit log's mirror and the signing keys. Audit objects
# are written once and never rewritten (append-only batches, one checkpoint per size), so a key
# present in both copies is the same object; `keys/` documents are rewritten by a key rotation,
# so they are compared byte for byte (they are a few hundred bytes each).
SYNCED_PREFIXES = ("audit/", "keys/")
REWRITTEN_PREFIXES = ("keys/",)


@dataclass(frozen=True)
class DepositObject:
    """One object of a sealed deposit, and what a person calls it."""

    key: str
    name: str  # the file's path, or manifest.json / manifest.sig / identity.wrapped
    kind: str  # manifest | signature | identity | header | payload
    file: DepositFile | None = None


@dataclass
class Synced:
    copied: list[str] = field(default_factory=list)  # primary -> mirror
    restored: list[str] = field(default_factory=list)  # mirror -> primary (it was missing)


def copies(escrow: Escrow) -> dict[str, ObjectStore]:
    """The stores holding a copy, by name: the primary, and the mirror if there is one."""
    return {PRIMARY: escrow.store} | ({MIRROR: escrow.mirror} if escrow.mirror else {})


def deposit_objects(deposit: Deposit) -> list[DepositObject]:
    prefix = deposit_prefix(deposit.id)
    found = [
        DepositObject(prefix + MANIFEST, MANIFEST, "manifest"),
        DepositObject(prefix + SIGNATURE, SIGNATURE, "signature"),
        DepositObject(identity_object(deposit.id), IDENTITY, "identity"),
    ]
    for file in sorted(deposit.files, key=lambda f: f.idx):
        header, payload = header_key(file.idx, deposit.generation), payload_key(
            file.idx, deposit.generation)
        found.append(DepositObject(prefix + header, file.path, "header", file))
        found.append(DepositObject(prefix + payload, file.path, "payload", file))
    return found


def copy_object(
    source: ObjectStore, target: ObjectStore, key: str, throttle: Throttle | None = None
) -> int:
    """Stream one object from `source` to `target`; the bytes copied."""
    info = source.head(key)
    if info is None:
        raise ObjectMissing(f"object {key!r} does not exist in the copy to read from")
    with source.open_read(key) as stream:
        target.put_stream(key, throttle.reader(stream) if throttle else stream, info.size)
    return info.size


def check_store(escrow: Escrow, store: ObjectStore) -> str:
    """The store's own check, and, with ESCROW_OBJECT_LOCK_DAYS set, that its bucket has Object
    Lock: found by the health check, not by the first deposit failing to seal."""
    found = store.check()
    if escrow.settings.object_lock_days and isinstance(store, SupportsRetention):
        found += f"; {store.check_object_lock()}"
    return found


def lock(escrow: Escrow, store: ObjectStore, keys: list[str]) -> None:
    """Object Lock each key's current version until now + ESCROW_OBJECT_LOCK_DAYS (S3 only)."""
    days = escrow.settings.object_lock_days
    if not days or not isinstance(store, SupportsRetention):
        return
    until = now() + timedelta(days=days)
    for key in keys:
        store.retain_until(key, until)


def lock_deposit(escrow: Escrow, deposit: Deposit) -> None:
    """At sealing: lock every object of the deposit in the primary store. A failure names the
    store's own hint in its message too, since a failed deposit keeps only the message."""
    try:
        lock(escrow, escrow.store, [o.key for o in deposit_objects(deposit)])
    except StorageError as error:
        hint = f" ({error.hint})" if error.hint else ""
        raise StorageError(
            f"sealing needs Object Lock on every object, and it failed: {error.message}{hint}",
            hint=error.hint,
        ) from None


def record(uow: UnitOfWork, copy: str, deposit_id: str, info: ObjectInfo) -> None:
    """Remember a good object's size and ETag in one copy, for the next checksum comparison."""
    uow.session.merge(
        StoredObject(
            copy=copy,
            key=info.key,
            deposit_id=deposit_id,
            size=info.size,
            etag=info.etag,
            checked_at=now(),
        )
    )


def load_detached(uow: UnitOfWork, deposit_id: str) -> Deposit:
    """A deposit with its files and model loaded, detached from the session: usable after the
    transaction ends (copies and checks read the stores outside any transaction)."""
    deposit = uow.session.get(Deposit, deposit_id)
    if deposit is None:
        raise NotFound(f"deposit {deposit_id!r} does not exist", hint="check the deposit id")
    _ = deposit.model.organisation.name, [f.header for f in deposit.files]
    uow.session.expunge_all()
    return deposit


def recorded(uow: UnitOfWork, deposit_id: str) -> dict[tuple[str, str], StoredObject]:
    rows = uow.session.scalars(select(StoredObject).where(StoredObject.deposit_id == deposit_id))
    return {(row.copy, row.key): row for row in rows}


# --- at sealing --------------------------------------------------------------------------------


def after_seal(escrow: Escrow, deposit_id: str, actor: Principal) -> None:
    """Copy a just-sealed deposit to the mirror (and lock it there), sync the audit log and
    keys, and record what each copy holds. Never raises: the deposit is sealed on the primary
    whatever happens here, and a mirror that failed is logged and filled by the next fixity run.
    """
    try:
        with escrow.uow() as uow:
            deposit = load_detached(uow, deposit_id)
        names, event = [PRIMARY], None
        if escrow.mirror is not None:
            event = _mirror_sealed(escrow, deposit)
            if event[0] == AuditAction.DEPOSIT_MIRRORED:
                names.append(MIRROR)
        stores = copies(escrow)
        heads = [(n, stores[n].head(o.key)) for o in deposit_objects(deposit) for n in names]
        with escrow.uow() as uow:
            for name, info in heads:
                if info is not None:
                    record(uow, name, deposit_id, info)
            if event is not None:
                uow.audit(event[0], actor, {"deposit": deposit_id}, event[1])
            uow.commit()
    except EscrowError as error:
        log.warning("after sealing %s: %s", deposit_id, error.message)
    try:
        checkpoint_and_mirror(escrow)  # the seal's events, signed and in every copy now
    except EscrowError as error:
        log.warning("checkpoint after sealing %s: %s", deposit_id, error.message)


def checkpoint_and_mirror(escrow: Escrow) -> int:
    """Sign a checkpoint of the whole log now (whatever the interval) and copy the audit
    objects to the mirror: what a recovery could lose shrinks to nothing at this point. Called
    after a seal, at the end of a fixity run, and at a clean shutdown; the size signed."""
    with escrow.uow() as uow:
        size = audit.sign_checkpoint(escrow, uow).size
    if escrow.mirror is not None:
        sync_prefixes(escrow, ("audit/",))
    return size


def mirror_checkpoint(escrow: Escrow, mirrored: int) -> int:
    """The worker's timer: sign the checkpoint if the log grew and the interval passed and, if
    the log grew since `mirrored`, copy the new audit objects to the mirror; the size now
    mirrored."""
    with escrow.uow() as uow:
        size = audit.latest_checkpoint(escrow, uow).size
    if escrow.mirror is not None and size != mirrored:
        sync_prefixes(escrow, ("audit/",))
    return size


def _mirror_sealed(escrow: Escrow, deposit: Deposit) -> tuple[AuditAction, dict[str, object]]:
    """(audit action, details) of copying a sealed deposit to the mirror."""
    assert escrow.mirror is not None
    keys = [o.key for o in deposit_objects(deposit)]
    try:
        copied = sum(copy_object(escrow.store, escrow.mirror, key) for key in keys)
        lock(escrow, escrow.mirror, keys)
        synced = sync_prefixes(escrow)
    except EscrowError as error:
        log.warning("mirror copy of deposit %s failed: %s", deposit.id, error.message)
        return AuditAction.DEPOSIT_MIRROR_FAILED, {"error": error.message, "hint": error.hint}
    return AuditAction.DEPOSIT_MIRRORED, {
        "objects": len(keys),
        "bytes": copied,
        "synced": len(synced.copied) + len(synced.restored),
    }


# --- everything recovery needs beside the deposits --------------------------------------------


def sync_prefixes(
    escrow: Escrow,
    prefixes: tuple[str, ...] = SYNCED_PREFIXES,
    throttle: Throttle | None = None,
) -> Synced:
    """Copy what the mirror lacks (or holds differently, for rewritten objects) from the
    primary, and restore to the primary what only the mirror holds."""
    synced = Synced()
    if escrow.mirror is None:
        return synced
    for prefix in prefixes:
        _sync_prefix(escrow.store, escrow.mirror, prefix, synced, throttle)
    return synced


def _sync_prefix(
    primary: ObjectStore,
    mirror: ObjectStore,
    prefix: str,
    synced: Synced,
    throttle: Throttle | None,
) -> None:
    in_primary, in_mirror = set(primary.list_keys(prefix)), set(mirror.list_keys(prefix))
    for key in sorted(in_mirror - in_primary):
        copy_object(mirror, primary, key, throttle)
        synced.restored.append(key)
    for key in sorted(in_primary):
        if key not in in_mirror or (
            prefix in REWRITTEN_PREFIXES and primary.get_bytes(key) != mirror.get_bytes(key)
        ):
            copy_object(primary, mirror, key, throttle)
            synced.copied.append(key)
