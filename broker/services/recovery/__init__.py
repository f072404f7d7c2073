"""Rebuild a deployment from its bucket and master key: signing keys, organisations, models,
sealed deposits, and the audit log up to its newest mirrored checkpoint.

Three phases, so a bad bucket changes nothing: read and check everything (signatures, the
master key, every object, the log against its checkpoints); write it all in one transaction;
then verify every deposit by decrypting and hashing, with the results on the audit log. The
log is read twice (to check, then to write, checked again), one mirrored batch at a time, so
memory does not grow with its length.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy import delete, func, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from broker.adapters.db.models import (
    AgreementRelease,
    AuditCheckpoint,
    AuditEvent,
    AuditHead,
    Deposit,
    DepositFile,
    Model,
    Organisation,
    ReleaseAgreement,
    SigningKey,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.adapters.objectstore.base import ObjectStore
from broker.container import Escrow
from broker.domain.events import AuditAction
from broker.domain.principals import OPERATOR
from broker.domain.states import FileState
from broker.errors import EscrowError
from broker.services.deposits import SEALED, file_index
from broker.services.recovery.bucket import (
    Bucket,
    DepositFromBucket,
    RecoveryFailed,
    deposit_ids,
    read_deposit,
    read_keys,
)
from broker.services.recovery.log import RECOVERED_ISSUER, read_log, write_log
from broker.services.verification import run_verification

__all__ = [
    "NOT_IN_BUCKET",
    "RECOVERED_ISSUER",
    "Bucket",
    "DepositFromBucket",
    "Recovered",
    "RecoveryFailed",
    "read_bucket",
    "recover",
]

NOT_IN_BUCKET = (
    "people's profiles and roles (their user ids stay reserved, as disabled placeholders), "
    "login sessions and tokens, service tokens",
    "access requests, reviews, grants and key releases, researchers' keys, NDA signatures",
    "release agreements' check-ins and trustee votes (their events stay on the log; the "
    "agreements' texts and releases are recovered)",
    "deposits that were never sealed (no signed manifest)",
    "audit events after the newest mirrored checkpoint",
)


@dataclass(frozen=True)
class Recovered:
    deposits: list[str]
    verified: dict[str, bool]
    entries: int
    checkpoint: int
    unsealed: list[str]
    dropped_entries: int
    not_recovered: tuple[str, ...] = NOT_IN_BUCKET


def recover(escrow: Escrow, manifest_key: bytes | None = None) -> Recovered:
    """Read the configured store's bucket into an empty database, then verify every deposit."""
    _require_schema(escrow)
    bucket = read_bucket(escrow, manifest_key)
    if bucket.problems:
        raise RecoveryFailed(
            "the bucket cannot be recovered as it is: " + "; ".join(bucket.problems)
            + f". Nothing was written. Readable: {len(bucket.deposits)} deposit(s), "
            f"{bucket.entries} audit entries",
            hint="restore the named objects (from the mirror or a backup), or check the master "
            "key (ESCROW_KEY_FILE / ESCROW_KMS_KEY_ID), then run `escrow recover` again",
        )
    with escrow.uow() as uow:
        _require_empty(uow)
        _write(uow, bucket, escrow.store)
        uow.commit()
    verified = {
        d.manifest["deposit_id"]: run_verification(escrow, d.manifest["deposit_id"], OPERATOR).ok
        for d in bucket.deposits
    }
    return Recovered(
        deposits=sorted(verified),
        verified=verified,
        entries=bucket.entries,
        checkpoint=max(bucket.checkpoints, default=0),
        unsealed=bucket.unsealed,
        dropped_entries=bucket.dropped_entries,
    )


def _require_schema(escrow: Escrow) -> None:
    """The database answers and has its schema (`escrow init` makes it), before anything is
    read: else say what to run first, not the driver's traceback."""
    url = make_url(escrow.settings.database_url).render_as_string(hide_password=True)
    first = (
        "run `escrow init` with the same settings (it makes the schema and the keys, and "
        "sees the store's deployment), then `escrow recover`"
    )
    try:
        with escrow.engine.connect() as connection:
            has_schema = inspect(connection).has_table("alembic_version")
    except OperationalError as error:  # the driver's own words (no statement, no password)
        reason = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ""
        raise RecoveryFailed(
            f"cannot open the database {url}: {reason or type(error.orig).__name__}; "
            "nothing was done",
            hint="create the database (PostgreSQL: `createdb NAME`) or fix "
            f"ESCROW_DATABASE_URL; then {first}",
        ) from None
    if not has_schema:
        raise RecoveryFailed(f"the database {url} has no schema yet; nothing was done", hint=first)


# --- phase 1: read and check -------------------------------------------------------------------


def read_bucket(escrow: Escrow, manifest_key: bytes | None) -> Bucket:
    bucket = Bucket()
    store = escrow.store
    public = read_keys(escrow, bucket)
    if manifest_key is not None and public.get("manifest") not in (None, manifest_key):
        bucket.problems.append(
            "the bucket's manifest key is not the pinned one you gave: the bucket was tampered "
            "with or belongs to another deployment"
        )
    manifest_key = public.get("manifest")
    for deposit_id in deposit_ids(store):
        _attempt(bucket, f"deposit {deposit_id}",
                 partial(read_deposit, escrow, bucket, deposit_id, manifest_key))
    _attempt(bucket, "audit log", lambda: read_log(escrow, bucket, public.get("checkpoint")))
    return bucket


def _attempt(bucket: Bucket, what: str, read: Callable[[], None]) -> None:
    try:
        read()
    except EscrowError as error:
        bucket.problems.append(f"{what}: {error.message}")


# --- phase 2: write ----------------------------------------------------------------------------


def _require_empty(uow: UnitOfWork) -> None:
    """Only a fresh database: `escrow init` made signing keys and logged them, nothing else."""
    busy = [
        name for name, table in (("organisations", Organisation), ("deposits", Deposit),
                                 ("users", User))
        if uow.session.scalar(select(func.count()).select_from(table))
    ]
    others = uow.session.scalar(
        select(func.count()).select_from(AuditEvent)
        .where(AuditEvent.action != AuditAction.SIGNING_KEY_CREATED)
    )
    if busy or others:
        raise RecoveryFailed(
            f"the database is not empty ({', '.join(busy) or 'audit events'}): recovery only "
            "fills a new database",
            hint="point ESCROW_DATABASE_URL at an empty database, run `escrow db upgrade`, "
            "then `escrow recover`",
        )
    for table in (AuditEvent, AuditCheckpoint, SigningKey):  # init's fresh keys
        uow.session.execute(delete(table))
    uow.session.execute(update(AuditHead).values(size=0, frontier=b""))


def _write(uow: UnitOfWork, bucket: Bucket, store: ObjectStore) -> None:
    for document in bucket.keys:
        uow.session.add(SigningKey(
            id=document["key_id"], purpose=document["purpose"],
            public_key=base64.b64decode(document["public_key"]),
            wrapped_private=base64.b64decode(document["wrapped_private"]),
            created_at=datetime.fromisoformat(document["created"]),
            active=bool(document["active"]),
        ))
    models: dict[str, Model] = {}
    for deposit in bucket.deposits:
        _write_deposit(uow, deposit, models)
    uow.session.flush()
    write_log(uow, bucket, store)


def _write_deposit(uow: UnitOfWork, found: DepositFromBucket, models: dict[str, Model]) -> None:
    manifest = found.manifest
    model = models.get(manifest["model"]) or _model(uow, manifest["model"])
    models[manifest["model"]] = model
    created = datetime.fromisoformat(manifest["created"])
    deposit = Deposit(
        id=manifest["deposit_id"], model_id=model.id, version=manifest["version"], state=SEALED,
        recipient=manifest["recipient"], recipient_type=manifest["recipient_type"],
        extra_recipients=json.dumps(manifest["extra_recipients"]),
        classical=bool(manifest["classical"]), wrapped_identity=found.wrapped_identity,
        created_by=manifest["depositor"]["token"], created_at=created, sealed_at=created,
        generation=int(manifest.get("generation", 0)),
    )
    uow.session.add(deposit)
    for file in manifest["files"]:
        index = file_index(file["header"])
        uow.session.add(DepositFile(
            deposit_id=deposit.id, idx=index, path=file["path"], size=int(file["size"]),
            state=FileState.VERIFIED, header=found.headers[index], sha256=file["sha256"],
        ))
    _write_agreements(uow, deposit.id, found)


def _write_agreements(uow: UnitOfWork, deposit_id: str, found: DepositFromBucket) -> None:
    rows = {}
    for document, raw in found.agreements:
        row = ReleaseAgreement(
            deposit_id=deposit_id, number=int(document["number"]), text=raw.decode("utf-8"),
            sha256=document["sha256"], created_by=document["created_by"],
            created_at=datetime.fromisoformat(document["created_at"]),
        )
        uow.session.add(row)
        rows[row.sha256] = row
    uow.session.flush()
    released = found.released
    if released is not None and released["agreement_sha256"] in rows:
        uow.session.add(AgreementRelease(
            deposit_id=deposit_id, agreement_id=rows[released["agreement_sha256"]].id,
            trigger=released["trigger"], unlocks=released["unlocks"],
            released_at=datetime.fromisoformat(released["released_at"]),
        ))


def _model(uow: UnitOfWork, full_name: str) -> Model:
    org_name, name = full_name.split("/", 1)
    org = uow.session.scalar(select(Organisation).where(Organisation.name == org_name))
    if org is None:
        org = Organisation(name=org_name)
        uow.session.add(org)
        uow.session.flush()
    model = Model(org_id=org.id, name=name)
    uow.session.add(model)
    uow.session.flush()
    return model
