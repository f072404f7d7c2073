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
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import islice
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete, func, inspect, select, text, update
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
from broker.auditlog.checkpoint import (
    CheckpointError,
    format_verifier_key,
    verify_checkpoint,
)
from broker.auditlog.index import index_of
from broker.auditlog.proofs import leaf_hash
from broker.auditlog.verifier import LogReplay, LogTampered
from broker.container import Escrow
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.parts import payload_size
from broker.domain.principals import OPERATOR
from broker.domain.states import FileState
from broker.errors import EscrowError
from broker.services import audit, signing
from broker.services.agreements import AGREEMENTS_DIR
from broker.services.deposits import (
    SEALED,
    deposit_prefix,
    file_index,
    identity_context,
)
from broker.services.verification import run_verification

NOT_IN_BUCKET = (
    "people's profiles and roles (their user ids stay reserved, as disabled placeholders), "
    "login sessions and tokens, service tokens",
    "access requests, reviews, grants and key releases, researchers' keys, NDA signatures",
    "release agreements' check-ins and trustee votes (their events stay on the log; the "
    "agreements' texts and releases are recovered)",
    "deposits that were never sealed (no signed manifest)",
    "audit events after the newest mirrored checkpoint",
)


class RecoveryFailed(EscrowError):
    status = 409
    title = "recovery failed"


@dataclass
class DepositFromBucket:
    manifest: dict[str, Any]
    wrapped_identity: bytes
    headers: dict[int, bytes]
    # release agreements: (what identifies it, its text) oldest first; the release, if fired
    agreements: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)
    released: dict[str, Any] | None = None


@dataclass
class Bucket:
    """What the bucket holds, checked; `problems` says what is wrong with the rest."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    deposits: list[DepositFromBucket] = field(default_factory=list)
    checkpoints: dict[int, str] = field(default_factory=dict)
    roots: dict[int, bytes] = field(default_factory=dict)  # of the checkpoints, by size
    entries: int = 0  # the log's entries up to the newest checkpoint, checked (not kept)
    unsealed: list[str] = field(default_factory=list)
    dropped_entries: int = 0
    problems: list[str] = field(default_factory=list)


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
    public = _read_keys(escrow, bucket)
    if manifest_key is not None and public.get("manifest") not in (None, manifest_key):
        bucket.problems.append(
            "the bucket's manifest key is not the pinned one you gave: the bucket was tampered "
            "with or belongs to another deployment"
        )
    manifest_key = public.get("manifest")
    for deposit_id in _deposit_ids(store):
        _attempt(bucket, f"deposit {deposit_id}",
                 partial(_read_deposit, escrow, bucket, deposit_id, manifest_key))
    _attempt(bucket, "audit log", lambda: _read_log(escrow, bucket, public.get("checkpoint")))
    return bucket


def _attempt(bucket: Bucket, what: str, read: Callable[[], None]) -> None:
    try:
        read()
    except EscrowError as error:
        bucket.problems.append(f"{what}: {error.message}")


def _read_keys(escrow: Escrow, bucket: Bucket) -> dict[str, bytes]:
    """The signing keys, each unwrapped once to prove the master key is the right one."""
    public: dict[str, bytes] = {}
    for key in escrow.store.list_keys(signing.KEYS_PREFIX):
        document = json.loads(escrow.store.get_bytes(key))
        wrapped = base64.b64decode(document["wrapped_private"])
        try:
            escrow.custody.unwrap(wrapped, signing.custody_context(
                document["purpose"], document["key_id"]))
        except EscrowError as error:
            bucket.problems.append(
                f"signing key {document['key_id']} cannot be unwrapped ({error.message}): "
                "is this the deployment's master key?"
            )
            continue
        bucket.keys.append(document)
        if document.get("active"):
            public[document["purpose"]] = base64.b64decode(document["public_key"])
    for purpose in signing.PURPOSES:
        if purpose not in public and not bucket.problems:
            bucket.problems.append(f"no active {purpose} signing key under {signing.KEYS_PREFIX}")
    return public


def _deposit_ids(store: ObjectStore) -> list[str]:
    return sorted({key.split("/")[1] for key in store.list_keys("deposits/")})


def _read_deposit(
    escrow: Escrow, bucket: Bucket, deposit_id: str, manifest_key: bytes | None
) -> None:
    store, prefix = escrow.store, deposit_prefix(deposit_id)
    if store.head(prefix + "manifest.json") is None:
        bucket.unsealed.append(deposit_id)
        return
    manifest_bytes = store.get_bytes(prefix + "manifest.json")
    signature = json.loads(store.get_bytes(prefix + "manifest.sig"))
    try:
        Ed25519PublicKey.from_public_bytes(manifest_key or b"").verify(
            base64.b64decode(signature["signature"]), manifest_bytes)
    except (InvalidSignature, ValueError):
        raise RecoveryFailed(
            "its manifest's signature does not verify with the manifest key",
            hint="restore manifest.json and manifest.sig from the mirror",
        ) from None
    manifest = json.loads(manifest_bytes)
    wrapped = store.get_bytes(prefix + "identity.wrapped")
    escrow.custody.unwrap(wrapped, identity_context(deposit_id))  # the master key opens it
    headers = {}
    for file in manifest["files"]:  # the objects the manifest names (a rekey's new ones)
        index = file_index(file["header"])
        headers[index] = store.get_bytes(prefix + file["header"])
        found = store.head(prefix + file["payload"])
        expected = payload_size(int(file["size"]))
        if found is None or found.size != expected:
            raise RecoveryFailed(
                f"object {prefix}{file['payload']} ({file['path']}) is "
                + ("missing" if found is None else f"{found.size} bytes, not {expected}"),
                hint="restore it from the mirror",
            )
    read = DepositFromBucket(manifest, wrapped, headers)
    _read_agreements(store, prefix, read)
    bucket.deposits.append(read)


def _read_agreements(store: ObjectStore, prefix: str, found: DepositFromBucket) -> None:
    """The deposit's release agreements and its release (`agreements.AGREEMENTS_DIR`); each
    text must hash to the SHA-256 recorded beside it (and on the audit log)."""
    directory = prefix + AGREEMENTS_DIR
    for key in store.list_keys(directory):
        if not key.endswith(".json") or key == directory + "released.json":
            continue
        document = json.loads(store.get_bytes(key))
        text = store.get_bytes(key.removesuffix(".json") + ".yaml")
        if hashlib.sha256(text).hexdigest() != document["sha256"]:
            raise RecoveryFailed(
                f"release agreement {key.removesuffix('.json')}.yaml does not hash to the "
                f"SHA-256 recorded for it ({document['sha256'][:16]}…)",
                hint="restore it from the mirror; its text is also on the audit log "
                "(agreement.attached or agreement.amended)",
            )
        found.agreements.append((document, text))
    if store.head(directory + "released.json") is not None:
        found.released = json.loads(store.get_bytes(directory + "released.json"))


def _read_log(escrow: Escrow, bucket: Bucket, checkpoint_key: bytes | None) -> None:
    """Every mirrored checkpoint checked against the checkpoint key, then every mirrored entry
    replayed against them, one batch in memory at a time: the log is recovered up to the
    newest checkpoint (the entries are read again when written)."""
    store, origin = escrow.store, escrow.settings.origin
    if checkpoint_key is None:
        return  # reported with the keys
    verifier = format_verifier_key(origin, checkpoint_key)
    for key in store.list_keys(audit.CHECKPOINT_PREFIX):
        note = store.get_bytes(key).decode()
        try:
            checkpoint = verify_checkpoint(note, verifier)
        except CheckpointError as error:
            raise RecoveryFailed(
                f"checkpoint {key} does not verify as {origin!r} with the checkpoint key "
                f"({error})",
                hint="if the bucket's checkpoints name another origin (their first line) than "
                "the one recorded in deployment.json, run `escrow init` in a new "
                "ESCROW_DATA_DIR against this store (it takes the origin from the checkpoints) "
                "and recover there; " + _LOG_HINT,
            ) from None
        bucket.checkpoints[checkpoint.size] = note
        bucket.roots[checkpoint.size] = checkpoint.root
    for _, vouched in _replayed(store, bucket.roots):
        if vouched:
            bucket.entries += 1
        else:
            bucket.dropped_entries += 1


def _replayed(store: ObjectStore, roots: dict[int, bytes]) -> Iterator[tuple[bytes, bool]]:
    """Every mirrored entry, and whether a checkpoint vouches for it: those up to the newest
    checkpoint are checked against the checkpoints as they come; later ones are left out."""
    newest = max(roots, default=0)
    replay = LogReplay(roots=roots)
    try:
        for leaf in _batches(store):
            vouched = replay.size < newest
            if vouched:
                replay.add(replay.size, leaf)
            yield leaf, vouched
        replay.finish(newest)
    except LogTampered as error:
        raise RecoveryFailed(f"the mirrored log is damaged: {error}", hint=_LOG_HINT) from None


_LOG_HINT = (
    "restore the audit/ objects from the mirror; a log that does not match its signed "
    "checkpoints must not be recovered as if it were whole"
)


def _batches(store: ObjectStore) -> Iterator[bytes]:
    """Every mirrored leaf once, in order. Batches written by two processes at once may overlap
    (each mirrors from what it listed): the overlap must repeat the same leaves. A gap, a
    differing overlap or a short batch is named. Keys sort by first entry, so an overlap lies
    within the leaves kept from the batches before: from the last one's start on."""
    kept: list[bytes] = []  # the leaves from entry `kept_from` up to `read` (exclusive)
    kept_from = read = 0
    for key in store.list_keys(audit.ENTRIES_PREFIX):
        start, end = audit.batch_range(key)
        if start < kept_from:  # list_keys sorts; a key out of order is not one of ours
            raise RecoveryFailed(f"batch {key} is listed out of order", hint=_LOG_HINT)
        if start > read:
            raise RecoveryFailed(
                f"batch {key} starts at entry {start}, but the batches before end at "
                f"{read}: entries {read}..{start - 1} are missing",
                hint=_LOG_HINT,
            )
        lines = store.get_bytes(key).split(b"\n")
        if lines[-1] != b"" or len(lines) - 1 != end - start:
            raise RecoveryFailed(
                f"batch {key} is truncated: it holds {len(lines) - 1} whole entries, "
                f"not {end - start}",
                hint=_LOG_HINT,
            )
        leaves = lines[:-1]
        for seq, leaf in enumerate(leaves, start):
            if seq < read:
                if kept[seq - kept_from] != leaf:
                    raise RecoveryFailed(
                        f"batch {key} holds another entry {seq} than an earlier batch",
                        hint=_LOG_HINT,
                    )
                continue
            read += 1
            yield leaf
        kept = leaves + kept[end - kept_from :] if end < read else leaves
        kept_from = start


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
        .where(AuditEvent.action != "signing_key.created")
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
    _write_log(uow, bucket, store)


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


RECOVERED_ISSUER = "urn:weights-escrow:recovered"


_WRITE_CHUNK = 1000  # entries per flush: memory stays flat however long the log is


def _event_row(
    seq: int, leaf: bytes, digest: bytes, subtrees: bytes, event: dict[str, Any],
    models: dict[str, str],
) -> AuditEvent:
    subject = dict(event.get("subject") or {})
    if "model" not in subject and subject.get("deposit") in models:
        subject["model"] = models[subject["deposit"]]
    index = index_of(event["actor"], subject)
    return AuditEvent(
        seq=seq, leaf=leaf, leaf_hash=digest, action=event["action"],
        created_at=datetime.fromisoformat(event["time"].replace("Z", "+00:00")),
        org=index.org, model=index.model, user_id=index.user_id, actor=index.actor,
        subtrees=subtrees,
    )


def _user_ids(event: dict[str, Any]) -> Iterator[int]:
    for value in (event.get("subject", {}).get("user"), _user_actor(event["actor"])):
        if isinstance(value, str) and value.isdigit():
            yield int(value)


def _reserve_user_ids(uow: UnitOfWork, ids: set[int]) -> None:
    """The log names people by user id; those ids stay theirs. A disabled placeholder holds each
    one (its profile is not in the bucket), so a new account never takes an id the log uses."""
    moment = now()
    for user_id in sorted(ids):
        uow.session.add(User(id=user_id, issuer=RECOVERED_ISSUER, subject=f"user-{user_id}",
                             created_at=moment, disabled_at=moment))
    uow.session.flush()
    if ids and uow.session.get_bind().dialect.name == "postgresql":
        uow.session.execute(text(  # explicit ids do not move the sequence on PostgreSQL
            "SELECT setval(pg_get_serial_sequence('users', 'id'), :top)"), {"top": max(ids)})


def _user_actor(actor: dict[str, str]) -> str | None:
    return actor.get("id") if actor.get("kind") == "user" else None


def _write_log(uow: UnitOfWork, bucket: Bucket, store: ObjectStore) -> None:
    """The entries read from the bucket again, a chunk at a time, and checked against the
    checkpoints again: a bucket changed since it was read fails here, before the commit."""
    models = {d.manifest["deposit_id"]: d.manifest["model"] for d in bucket.deposits}
    user_ids: set[int] = set()
    vouched = (leaf for leaf, ok in _replayed(store, bucket.roots) if ok)
    seq = 0
    while chunk := list(islice(vouched, _WRITE_CHUNK)):
        digests = [leaf_hash(leaf) for leaf in chunk]
        for leaf, digest, subtrees in zip(chunk, digests, uow.extend_tree(digests), strict=True):
            event = json.loads(leaf)
            user_ids.update(_user_ids(event))
            uow.session.add(_event_row(seq, leaf, digest, subtrees, event, models))
            seq += 1
        uow.session.flush()
    _reserve_user_ids(uow, user_ids)
    for size, note in bucket.checkpoints.items():
        uow.session.add(AuditCheckpoint(size=size, root=bucket.roots[size], note=note))
    uow.session.flush()
    uow.audit(AuditAction.ESCROW_RECOVERED, OPERATOR, {}, {
        "deposits": len(bucket.deposits), "entries": bucket.entries,
        "unsealed_deposits": bucket.unsealed, "dropped_entries": bucket.dropped_entries,
    })
