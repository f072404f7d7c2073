"""Fixity of one sealed deposit: every object of every copy checked (in full, or by the stores'
checksums, escalating to full when anything differs), each bad copy repaired from a good source
(another copy or the database), the outcome recorded on the deposit and the audit log. The runs
that call it, one deposit at a time, are in `broker/services/fixity.py`."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from broker import age
from broker.adapters.db.models import Deposit, SigningKey
from broker.adapters.db.uow import UnitOfWork
from broker.adapters.objectstore.base import ObjectInfo, ObjectStore, SupportsRetention
from broker.container import Escrow
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.parts import payload_size
from broker.domain.principals import Principal
from broker.domain.throttle import Throttle
from broker.errors import EscrowError, ObjectMissing, StorageError
from broker.services import copies
from broker.services.copies import DATABASE, DepositObject
from broker.services.deposits import deposit_identity
from broker.services.verification import check_payload

FULL, CHECKSUMS = "full", "checksums"


@dataclass(frozen=True)
class Finding:
    """A copy of an object that is not what it should be."""

    name: str  # the file's path, or manifest.json / manifest.sig / identity.wrapped
    key: str
    copy: str  # primary | mirror
    problem: str


@dataclass(frozen=True)
class Repair:
    name: str
    key: str
    copy: str  # the copy rewritten
    source: str  # primary | mirror | database
    problem: str  # what was wrong with it


@dataclass
class DepositResult:
    deposit_id: str
    model: str
    version: str
    method: str  # full | checksums
    copies: list[str]
    problems: list[Finding] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    escalated: list[Finding] = field(default_factory=list)  # checksum differences seen first
    error: str = ""  # the check could not run (e.g. key custody unavailable)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.error


# --- one deposit -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    """What a check needs from the database, read in one short transaction: no transaction
    stays open while gigabytes are read (SQLite takes its write lock at BEGIN)."""

    deposit: Deposit  # detached, its files and model loaded
    manifest_keys: dict[str, bytes]  # key id -> Ed25519 public key
    seen: dict[tuple[str, str], tuple[int, str]]  # (copy, key) -> recorded (size, ETag)


def _snapshot(escrow: Escrow, deposit_id: str) -> _Snapshot:
    with escrow.uow() as uow:
        keys = uow.session.scalars(select(SigningKey).where(SigningKey.purpose == "manifest"))
        manifest_keys = {k.id: bytes(k.public_key) for k in keys}
        seen = {w: (row.size, row.etag) for w, row in copies.recorded(uow, deposit_id).items()}
        return _Snapshot(copies.load_detached(uow, deposit_id), manifest_keys, seen)


def check_deposit(
    escrow: Escrow, deposit_id: str, method: str, throttle: Throttle, actor: Principal
) -> DepositResult:
    """Check one sealed deposit (escalating a checksum check to a full one when anything
    differs), repair what can be repaired, and record the outcome."""
    snapshot = _snapshot(escrow, deposit_id)
    deposit, stores = snapshot.deposit, copies.copies(escrow)
    result = DepositResult(
        deposit.id, deposit.model.full_name, deposit.version, method, list(stores)
    )
    good: list[tuple[str, ObjectInfo]] = []
    try:
        if method == CHECKSUMS:
            result.escalated = _checksum_findings(snapshot, stores)
            if result.escalated or deposit.failure:
                result.method = FULL
        if result.method == FULL:
            good = _full_check(escrow, snapshot, stores, throttle, result)
        _check_locks(escrow, deposit, stores, result)
    except EscrowError as error:
        result.error = error.message
    with escrow.uow() as uow:
        for copy, info in good:
            copies.record(uow, copy, deposit_id, info)
        stored = uow.session.get(Deposit, deposit_id)
        assert stored is not None
        _conclude(uow, stored, result, actor)
        uow.commit()
    return result


def _check_locks(
    escrow: Escrow, deposit: Deposit, stores: dict[str, ObjectStore], result: DepositResult
) -> None:
    """With ESCROW_OBJECT_LOCK_DAYS set, every object of every copy that can be locked must have
    been locked: one never locked (a mirror copy made while its bucket had no Object Lock) is
    locked now, or, if its store refuses, flagged, so the run does not report "all intact"."""
    days = escrow.settings.object_lock_days
    if not days:
        return
    for name, store in stores.items():
        if not isinstance(store, SupportsRetention):
            continue
        for obj in copies.deposit_objects(deposit):
            if store.retained_until(obj.key) is not None or store.head(obj.key) is None:
                continue  # locked (a lapsed lock is not renewed), or missing: found elsewhere
            try:
                store.retain_until(obj.key, now() + timedelta(days=days))
            except StorageError as error:
                hint = f" ({error.hint})" if error.hint else ""
                problem = f"is not under Object Lock and cannot be locked: {error.message}{hint}"
                result.problems.append(Finding(obj.name, obj.key, name, problem))
            else:
                result.repairs.append(
                    Repair(obj.name, obj.key, name, name, "was not under Object Lock")
                )


def _checksum_findings(snapshot: _Snapshot, stores: dict[str, ObjectStore]) -> list[Finding]:
    deposit, findings = snapshot.deposit, []
    for obj in copies.deposit_objects(deposit):
        for name, store in stores.items():
            seen = snapshot.seen.get((name, obj.key))
            problem = _verdict(_head_problem, store, obj, deposit, seen)
            if problem:
                findings.append(Finding(obj.name, obj.key, name, problem))
    return findings


def _head_problem(
    store: ObjectStore, obj: DepositObject, deposit: Deposit, seen: tuple[int, str] | None
) -> str:
    info = store.head(obj.key)
    if info is None:
        return "is missing"
    expected = _expected_size(obj, deposit)
    if expected is not None and info.size != expected:
        return f"is {info.size} bytes, expected {expected}"
    if seen is not None and (info.size, info.etag) != seen:
        return (
            f"changed since it was last checked (size {info.size}, ETag {info.etag}; "
            f"recorded size {seen[0]}, ETag {seen[1]})"
        )
    return ""


def _expected_size(obj: DepositObject, deposit: Deposit) -> int | None:
    if obj.kind == "payload" and obj.file is not None:
        return payload_size(obj.file.size)
    if obj.kind == "header" and obj.file is not None and obj.file.header is not None:
        return len(obj.file.header)
    if obj.kind == "identity":
        return len(deposit.wrapped_identity)
    return None


def _full_check(
    escrow: Escrow,
    snapshot: _Snapshot,
    stores: dict[str, ObjectStore],
    throttle: Throttle,
    result: DepositResult,
) -> list[tuple[str, ObjectInfo]]:
    """Read every copy back, repair what can be; (copy, HEAD) of each good object, to record."""
    deposit = snapshot.deposit
    objects = copies.deposit_objects(deposit)
    verdicts = _examine(escrow, snapshot, objects, stores, throttle)
    for obj in objects:
        _settle(escrow, deposit, obj, verdicts[obj.key], stores, throttle, result)
    repaired = {(r.copy, r.key) for r in result.repairs}
    good = []
    for obj in objects:
        for name, store in stores.items():
            if verdicts[obj.key][name] and (name, obj.key) not in repaired:
                continue
            info = store.head(obj.key)
            if info is not None:
                good.append((name, info))
    return good


def _conclude(uow: UnitOfWork, deposit: Deposit, result: DepositResult, actor: Principal) -> None:
    """Write the outcome on the deposit and the audit log (the caller commits)."""
    for repair in result.repairs:
        uow.audit(
            AuditAction.FIXITY_REPAIRED,
            actor,
            {"deposit": deposit.id, "path": repair.name},
            {
                "object": repair.key,
                "copy": repair.copy,
                "source": repair.source,
                "problem": repair.problem,
            },
        )
    details: dict[str, Any] = {"method": result.method, "copies": result.copies}
    if result.escalated:
        details["checksums_differed"] = [asdict(f) for f in result.escalated]
    if result.error:
        details["error"] = result.error
        uow.audit(AuditAction.FIXITY_INCOMPLETE, actor, {"deposit": deposit.id}, details)
        return
    if result.ok:
        _mark_passed(deposit, result)
        uow.audit(
            AuditAction.FIXITY_PASSED,
            actor,
            {"deposit": deposit.id},
            details
            | {"objects": len(copies.deposit_objects(deposit)), "repaired": len(result.repairs)},
        )
        return
    _mark_failed(deposit, result)
    uow.audit(
        AuditAction.FIXITY_FAILED,
        actor,
        {"deposit": deposit.id},
        details | {"files": [asdict(f) for f in result.problems]},
    )


def _mark_passed(deposit: Deposit, result: DepositResult) -> None:
    if result.method != FULL:
        return  # matching checksums do not make a deposit "verified", nor clear a failure
    deposit.last_verified_at = now()
    deposit.failure = None
    for file in deposit.files:
        file.error = None


def _mark_failed(deposit: Deposit, result: DepositResult) -> None:
    deposit.failure = "fixity: " + "; ".join(
        f"{f.name} ({f.copy} {f.key}): {f.problem}" for f in result.problems
    )
    for file in deposit.files:
        bad = [f.problem for f in result.problems if f.name == file.path]
        file.error = "; ".join(bad) or None


# --- reading every copy back -------------------------------------------------------------------


def _verdict(check: Callable[..., str], *args: Any) -> str:
    """A check's problem ("" if none), with a store's failure as the problem."""
    try:
        return check(*args)
    except ObjectMissing:
        return "is missing"
    except StorageError as error:
        return f"could not be read: {error.message}"


def _examine(
    escrow: Escrow,
    snapshot: _Snapshot,
    objects: list[DepositObject],
    stores: dict[str, ObjectStore],
    throttle: Throttle,
) -> dict[str, dict[str, str]]:
    """{object key: {copy: problem, "" if good}} for every object of every copy."""
    deposit = snapshot.deposit
    identity = deposit_identity(escrow, deposit)  # from the database's wrapped identity
    verdicts = _manifest_verdicts(deposit, snapshot.manifest_keys, stores, throttle)
    for obj in objects:
        if obj.kind in ("manifest", "signature"):
            continue
        verdicts[obj.key] = {
            name: _verdict(_object_problem, store, obj, deposit, identity, throttle)
            for name, store in stores.items()
        }
    return verdicts


def _object_problem(
    store: ObjectStore,
    obj: DepositObject,
    deposit: Deposit,
    identity: age.Identity,
    throttle: Throttle,
) -> str:
    if obj.kind == "payload":
        assert obj.file is not None and obj.file.header is not None
        try:
            file_key = age.unwrap_file_key(obj.file.header, [identity])
        except age.AgeError as error:
            return f"cannot be checked: the database's header does not open ({error})"
        with store.open_read(obj.key) as stream:
            return check_payload(
                throttle.reader(stream), file_key, obj.file.size, obj.file.sha256 or ""
            )
    expected = _database_bytes(obj, deposit)
    assert expected is not None
    data = _read(store, obj.key, throttle)
    if data != expected:
        return f"differs from the database's copy ({len(data)} bytes, expected {len(expected)})"
    return ""


def _database_bytes(obj: DepositObject, deposit: Deposit) -> bytes | None:
    """What the database holds of an object (headers and wrapped identities), else None."""
    if obj.kind == "identity":
        return deposit.wrapped_identity
    if obj.kind == "header" and obj.file is not None:
        return obj.file.header
    return None


def _read(store: ObjectStore, key: str, throttle: Throttle) -> bytes:
    data = store.get_bytes(key)
    throttle.consume(len(data))
    return data


def _manifest_verdicts(
    deposit: Deposit, keys: dict[str, bytes], stores: dict[str, ObjectStore], throttle: Throttle
) -> dict[str, dict[str, str]]:
    """A manifest copy is good if a signature (of either copy) by one of the broker's manifest
    keys verifies it and it lists the database's files; a signature copy is good if it
    verifies a good manifest."""
    objects = {o.kind: o for o in copies.deposit_objects(deposit)[:2]}
    manifest_key, signature_key = objects["manifest"].key, objects["signature"].key
    texts = {name: _read_or_problem(s, manifest_key, throttle) for name, s in stores.items()}
    sigs = {name: _read_or_problem(s, signature_key, throttle) for name, s in stores.items()}
    signatures = [s for s in sigs.values() if isinstance(s, bytes)]
    manifests: dict[str, str] = {}
    for name, text in texts.items():
        if isinstance(text, str):
            manifests[name] = text
            continue
        manifests[name] = _manifest_problem(text, deposit) or (
            ""
            if any(_verifies(s, text, keys) for s in signatures)
            else "no manifest.sig verifies it with the broker's manifest key"
        )
    good = [t for n, t in texts.items() if isinstance(t, bytes) and not manifests[n]]
    signed = {
        name: sig
        if isinstance(sig, str)
        else ("" if any(_verifies(sig, t, keys) for t in good) else "does not verify the manifest")
        for name, sig in sigs.items()
    }
    return {manifest_key: manifests, signature_key: signed}


def _read_or_problem(store: ObjectStore, key: str, throttle: Throttle) -> bytes | str:
    """The object's bytes, or (a str) what went wrong reading it."""
    try:
        return _read(store, key, throttle)
    except ObjectMissing:
        return "is missing"
    except StorageError as error:
        return f"could not be read: {error.message}"


def _manifest_problem(text: bytes, deposit: Deposit) -> str:
    try:
        manifest = json.loads(text)
        files = sorted((f["path"], f["size"], f["sha256"]) for f in manifest["files"])
        named = manifest["deposit_id"]
    except (ValueError, KeyError, TypeError):
        return "is not a deposit manifest"
    if named != deposit.id:
        return f"names deposit {named!r}"
    if files != sorted((f.path, f.size, f.sha256) for f in deposit.files):
        return "lists other files (paths, sizes or hashes) than the database"
    return ""


def _verifies(signature: bytes, manifest: bytes, keys: dict[str, bytes]) -> bool:
    try:
        document = json.loads(signature)
        public = keys[document["key_id"]]
        Ed25519PublicKey.from_public_bytes(public).verify(
            base64.b64decode(document["signature"], validate=True), manifest
        )
    except (ValueError, KeyError, TypeError, binascii.Error, InvalidSignature):
        return False
    return True


# --- repairs -----------------------------------------------------------------------------------


def _settle(
    escrow: Escrow,
    deposit: Deposit,
    obj: DepositObject,
    by_copy: dict[str, str],
    stores: dict[str, ObjectStore],
    throttle: Throttle,
    result: DepositResult,
) -> None:
    """Repair each bad copy of an object from a good source, or record it as a problem."""
    good = [name for name, problem in by_copy.items() if not problem]
    source = DATABASE if _database_bytes(obj, deposit) is not None else next(iter(good), None)
    for name, problem in by_copy.items():
        if not problem:
            continue
        if source is None:
            result.problems.append(Finding(obj.name, obj.key, name, problem))
            continue
        try:
            _rewrite(escrow, deposit, obj, stores, name, source, throttle)
        except EscrowError as error:
            failed = f"{problem}; the repair from {source} failed: {error.message}"
            result.problems.append(Finding(obj.name, obj.key, name, failed))
            continue
        result.repairs.append(Repair(obj.name, obj.key, name, source, problem))


def _rewrite(
    escrow: Escrow,
    deposit: Deposit,
    obj: DepositObject,
    stores: dict[str, ObjectStore],
    target: str,
    source: str,
    throttle: Throttle,
) -> None:
    if source == DATABASE:
        # Read again, not from the snapshot: a key rotation may have re-wrapped the identity
        # (row and bucket) while this check ran, and the old blob must not come back.
        with escrow.uow() as uow:
            data = _database_bytes(obj, copies.load_detached(uow, deposit.id))
        assert data is not None
        stores[target].put_bytes(obj.key, data)
    else:
        copies.copy_object(stores[source], stores[target], obj.key, throttle)
    copies.lock(escrow, stores[target], [obj.key])
