"""The master key: rotate it under a live broker (split and rebuilt from trustee shares in
`master_key_shares.py`).

Rotation re-wraps every secret the master key protects (deposit identities, in the database and
in the bucket's `identity.wrapped`, and the broker's signing keys) under a new key:

1. read every wrapped secret with the keys this broker holds; if any does not open, stop before
   changing anything, naming it;
2. local to local: keep the current key beside the key file as `<key file>.<key id>`, then
   atomically replace the key file with a new key, both under a lock (one rotation at a time:
   one that finds the file switched by another since it started stops, changing nothing).
   Every broker process re-reads the key file when it changes, so from here on new blobs use
   the new key and old blobs still open;
3. re-wrap each secret still under another key, one commit each (bucket copy first);
4. once a pass finds nothing left and the switch is `settle_s` old (a deposit being created at
   the switch may have wrapped with the old key), mirror the signing keys and bring the bucket's
   identity copies in step with the database.

No progress table: a blob that already names the target key is done, so rerunning the command
after a crash (even kill -9) finishes the same rotation. The start and the finish are audit
events naming key ids only.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update

from broker.adapters.custody import describe_blob, open_backend
from broker.adapters.custody.base import KeyCustody
from broker.adapters.custody.local import (
    LocalCustody,
    generate_key,
    is_key_id,
    key_id_of,
    read_key_file,
    replace_key_file,
    retired_key_path,
    write_key_file,
)
from broker.adapters.db.models import AuditEvent, Deposit, SigningKey
from broker.adapters.db.uow import UnitOfWork, rowcount
from broker.config import Settings
from broker.container import Escrow
from broker.domain.events import AuditAction
from broker.domain.principals import OPERATOR
from broker.errors import Conflict, CustodyError, EscrowError, InvalidInput, ObjectMissing
from broker.services import copies, signing
from broker.services.deposits import identity_context, identity_object

# How long after switching the local key file to keep sweeping: a deposit that wrapped its
# identity with the old key just before the switch commits within a few seconds.
SETTLE_S = 10.0
PROBE_CONTEXT = {"purpose": "key-rotation-probe"}
DEPOSIT, SIGNING_KEY = "deposit identity", "signing key"
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class WrappedSecret:
    kind: str  # DEPOSIT or SIGNING_KEY
    id: str
    blob: bytes
    context: dict[str, str]
    key: str  # "backend:key id" the blob names ("?" if it names none)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.id}"


@dataclass(frozen=True)
class RotationReport:
    key: str  # "backend:key id" every secret is now wrapped by
    rewrapped: int
    resumed: bool
    retired: list[str]  # keys secrets were wrapped by before
    bucket_copies_repaired: int
    configure: list[str]  # settings to change (then restart, then rotate once more)
    destroyable: list[str]  # old key material no secret needs any more

    @property
    def configuration_pending(self) -> bool:
        return bool(self.configure)


@dataclass
class _Plan:
    target: KeyCustody
    key: str
    new_key: bytes | None  # a local key this run installs in `key_file` (not yet on disk)
    resumed: bool
    key_file: Path | None = None
    replaces: str | None = None  # the local key id `key_file` held when this run planned


# --- what the master key protects ---------------------------------------------------------


def wrapped_secrets(uow: UnitOfWork) -> list[WrappedSecret]:
    """Every secret wrapped by key custody, with the context it is bound to."""
    deposits = uow.session.execute(select(Deposit.id, Deposit.wrapped_identity))
    keys = uow.session.execute(
        select(SigningKey.id, SigningKey.purpose, SigningKey.wrapped_private)
    )
    found = [_secret(DEPOSIT, i, blob, identity_context(i)) for i, blob in deposits]
    found += [
        _secret(SIGNING_KEY, i, blob, signing.custody_context(purpose, i))
        for i, purpose, blob in keys
    ]
    return sorted(found, key=lambda s: (s.kind, s.id))


def _secret(kind: str, secret_id: str, blob: bytes, context: dict[str, str]) -> WrappedSecret:
    return WrappedSecret(kind, secret_id, bytes(blob), context, _key_of(bytes(blob)))


def _key_of(blob: bytes) -> str:
    try:
        info = describe_blob(blob)
    except CustodyError:
        return "?"
    return f"{info.backend}:{info.key_id}"


def check_readable(custody: KeyCustody, secrets: list[WrappedSecret]) -> None:
    """Open every secret once; refuse (changing nothing) if any does not open."""
    problems = []
    for secret in secrets:
        try:
            custody.unwrap(secret.blob, secret.context)
        except EscrowError as error:
            problems.append(f"{secret.label} (key {secret.key}): {error.message}")
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CustodyError(
            f"key rotation stopped before changing anything: {len(problems)} of {len(secrets)} "
            f"wrapped secrets do not open with the keys this broker holds: "
            + "; ".join(problems[:3])
            + more,
            hint="restore the key they name (the key file, a retired `<key file>.<key id>` "
            "beside it, or KMS access) and run the rotation again",
        )


# --- rotation -----------------------------------------------------------------------------


def choose_target(settings: Settings, to: str | None, kms_key_id: str | None) -> KeyCustody | None:
    """The custody to rotate to: None means the configured one (resume, or a new local key)."""
    if to == "aws-kms":
        return open_backend(
            "aws-kms",
            key_file=settings.key_file,
            kms_key_id=kms_key_id or settings.kms_key_id,
            region=settings.aws_region,
            endpoint_url=settings.kms_endpoint_url,
        )
    if kms_key_id:
        raise InvalidInput("--kms-key-id goes with --to aws-kms", hint="add --to aws-kms")
    if to == "local" and settings.key_custody != "local":
        raise InvalidInput(
            "moving from aws-kms to a local key: the broker must be configured for it first",
            hint="set ESCROW_KEY_CUSTODY=local, run `escrow init` (it makes the key file), "
            "restart the broker, then run `escrow admin key rotate`",
        )
    return None


def rotate(
    escrow: Escrow,
    target: KeyCustody | None = None,
    *,
    settle_s: float = SETTLE_S,
    progress: Progress | None = None,
) -> RotationReport:
    """Re-wrap every secret under `target` (None: a new local key, or finish an interrupted
    rotation to the configured key). Safe to rerun at any point."""
    with escrow.uow() as uow:
        secrets = wrapped_secrets(uow)
    check_readable(escrow.custody, secrets)
    plan = _plan(escrow, target, secrets)
    retired = _start(escrow, plan, secrets)
    rewrapped = _rewrap_all(escrow, plan, settle_s, progress)
    return _finish(escrow, plan, retired, rewrapped)


def _start(escrow: Escrow, plan: _Plan, secrets: list[WrappedSecret]) -> list[str]:
    """Keep the old local key, log the start, install the new local key; the keys retired."""
    retired = sorted({s.key for s in secrets} - {plan.key})
    pending = sum(s.key != plan.key for s in secrets)
    if plan.new_key is None or plan.key_file is None:
        _audit_start(escrow, plan, retired, pending)
        return retired
    retired = sorted({*retired, f"local:{plan.replaces}"})
    with _key_file_locked(plan.key_file):
        _require_unswitched(plan.key_file, plan.replaces)
        _keep_current_key(plan.key_file)  # before anything else changes: harmless if it fails
        _audit_start(escrow, plan, retired, pending)
        _switch_key_file(plan.target, plan.key_file, plan.new_key)
    return retired


def _audit_start(escrow: Escrow, plan: _Plan, retired: list[str], pending: int) -> None:
    _audit(
        escrow,
        AuditAction.CUSTODY_ROTATION_STARTED,
        plan.key,
        {"from": retired, "pending": pending, "resumed": plan.resumed},
    )


@contextmanager
def _key_file_locked(key_file: Path) -> Iterator[None]:
    """One rotation at a time keeps and replaces the key file: an exclusive lock on
    `<key file>-rotation.lock` (not `<key file>.*`, where retired keys live), which the kernel
    releases if the process dies. Without it, two rotations could each keep the old key, and
    the second switch would drop the first's new key with every secret wrapped by it."""
    lock_file = key_file.with_name(key_file.name + "-rotation.lock")
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _require_unswitched(key_file: Path, planned: str | None) -> None:
    """The key file still holds the key this run planned to replace (under the lock)."""
    holds = key_id_of(read_key_file(key_file))
    if holds != planned:
        raise Conflict(
            f"key rotation: another rotation switched {key_file} to key {holds} after this "
            "one started; nothing was changed by this one",
            hint="let that rotation finish (it re-wraps every secret); run `escrow admin key "
            "rotate` again only if it was interrupted, to finish it",
        )


def _finish(escrow: Escrow, plan: _Plan, retired: list[str], rewrapped: int) -> RotationReport:
    """Bring the bucket in step, log the finish, and say what the operator does next."""
    repaired = _sync_bucket(escrow)
    retired = sorted({*retired, *_retired_earlier(escrow, plan.key)})
    report = _report(escrow, plan, retired, rewrapped, repaired)
    _audit(
        escrow,
        AuditAction.CUSTODY_ROTATION_FINISHED,
        plan.key,
        {
            "rewrapped": rewrapped,
            "retired": retired,
            "bucket_copies_repaired": repaired,
            "configuration_pending": report.configuration_pending,
        },
    )
    return report


def _retired_earlier(escrow: Escrow, key: str) -> set[str]:
    """Keys earlier runs of this rotation moved away from (e.g. before the switch to KMS)."""
    with escrow.uow() as uow:
        leaves = uow.session.scalars(
            select(AuditEvent.leaf).where(AuditEvent.action == AuditAction.CUSTODY_ROTATION_STARTED)
        )
        events = [json.loads(leaf) for leaf in leaves]
    return {
        old
        for event in events
        if event["subject"].get("key") == key
        for old in event["details"].get("from", [])
    }


def _plan(escrow: Escrow, target: KeyCustody | None, secrets: list[WrappedSecret]) -> _Plan:
    if target is not None:
        key = _probe(target)
        return _Plan(target, key, None, resumed=any(s.key == key for s in secrets))
    current = _current(escrow.custody)
    key = f"{current.name}:{current.key_id}"
    if any(s.key != key for s in secrets) or not isinstance(current, LocalCustody):
        # Finish a rotation to the configured key (after kill -9, or after the switch of
        # configuration to KMS). KMS rotates a key's own material: there is no new key to make.
        return _Plan(current, key, None, resumed=True)
    new_key = generate_key()
    return _Plan(
        current, f"local:{key_id_of(new_key)}", new_key, False, current.key_file, current.key_id
    )


def _current(custody: KeyCustody) -> KeyCustody:
    """The backend a custody wraps with (a keyring's current one, or the custody itself)."""
    return getattr(custody, "current", custody)


def _probe(custody: KeyCustody) -> str:
    """Wrap and unwrap a probe: the target works, and this is the key id its blobs will name
    (a KMS alias resolves to the key ARN)."""
    blob = custody.wrap(b"probe", PROBE_CONTEXT)
    if custody.unwrap(blob, PROBE_CONTEXT) != b"probe":
        raise CustodyError(f"key rotation: {custody!r} does not give back what it wrapped")
    return _key_of(blob)


def _keep_current_key(key_file: Path) -> None:
    """Copy the key in use to `<key file>.<key id>`, where every broker looks for retired keys."""
    key = read_key_file(key_file)
    kept = retired_key_path(key_file, key_id_of(key))
    if not kept.exists():
        write_key_file(kept, key)
    elif read_key_file(kept) != key:  # the name says which key it must hold
        raise CustodyError(f"retired key file {kept} does not hold key {key_id_of(key)}")


def _switch_key_file(target: KeyCustody, key_file: Path, new_key: bytes) -> None:
    replace_key_file(key_file, new_key)
    if target.key_id != key_id_of(new_key):  # the target re-reads the key file
        raise CustodyError(
            f"key rotation: {key_file} does not hold the new key after the switch",
            hint="check that nothing else writes the key file, then run the rotation again",
        )


def _rewrap_all(escrow: Escrow, plan: _Plan, settle_s: float, progress: Progress | None) -> int:
    """Re-wrap until a pass finds nothing left after the switch has settled; the count."""
    done = 0
    while True:
        with escrow.uow() as uow:
            pending = [s for s in wrapped_secrets(uow) if s.key != plan.key]
        if not pending:
            wait = _settle_wait(plan.target, settle_s)
            if wait <= 0:
                return done
            time.sleep(wait)
            continue
        replaced = 0
        for number, secret in enumerate(pending, start=1):
            replaced += _rewrap(escrow, plan, secret)
            if progress is not None:
                progress(done + number, done + len(pending), secret.label)
        done += len(pending)
        if not replaced:
            raise CustodyError(
                f"key rotation: {len(pending)} wrapped secrets changed while being re-wrapped",
                hint="something else is rewriting them (another rotation?); run it again later",
            )


def _settle_wait(target: KeyCustody, settle_s: float) -> float:
    if not isinstance(target, LocalCustody):
        return 0.0  # a broker switches to KMS only when restarted with the new configuration
    return os.stat(target.key_file).st_mtime + settle_s - time.time()


def _rewrap(escrow: Escrow, plan: _Plan, secret: WrappedSecret) -> int:
    """Re-wrap one secret; 1 if its row now holds the new blob."""
    plain = escrow.custody.unwrap(secret.blob, secret.context)
    blob = plan.target.wrap(plain, secret.context)
    if _key_of(blob) != plan.key:  # the key file was replaced again under this rotation
        raise CustodyError(
            f"key rotation: {secret.label} was wrapped by {_key_of(blob)}, not {plan.key}",
            hint="is another rotation running? Wait for it, then run this one again",
        )
    if plan.target.unwrap(blob, secret.context) != plain:  # never replace a blob by a worse one
        raise CustodyError(f"key rotation: the re-wrapped {secret.label} does not open")
    table: type[Deposit | SigningKey]
    if secret.kind == DEPOSIT:
        # The bucket copy first: it is never behind the row (recovery reads only the bucket).
        _put_identity(escrow, secret.id, blob)
        table, column = Deposit, Deposit.wrapped_identity
    else:
        table, column = SigningKey, SigningKey.wrapped_private
    with escrow.uow() as uow:
        result = uow.session.execute(
            update(table)
            .where(table.id == secret.id, column == secret.blob)
            .values({column.key: blob})
        )
        uow.commit()
    return rowcount(result)


def _sync_bucket(escrow: Escrow) -> int:
    """Mirror the signing keys and put each deposit's row blob where the bucket copy differs."""
    repaired = 0
    with escrow.uow() as uow:
        signing.mirror_keys(uow, escrow.store)
        rows = [s for s in wrapped_secrets(uow) if s.kind == DEPOSIT]
    for secret in rows:
        try:
            found = escrow.store.get_bytes(identity_object(secret.id))
        except ObjectMissing:
            found = None
        if found != secret.blob:
            _put_identity(escrow, secret.id, secret.blob)
            repaired += 1
    return repaired


def _put_identity(escrow: Escrow, deposit_id: str, blob: bytes) -> None:
    """A new version of identity.wrapped, under Object Lock like the deposit's other objects."""
    escrow.store.put_bytes(identity_object(deposit_id), blob)
    copies.lock(escrow, escrow.store, [identity_object(deposit_id)])


def _audit(escrow: Escrow, action: AuditAction, key: str, details: dict[str, object]) -> None:
    """Key ids only: never key material."""
    with escrow.uow() as uow:
        uow.audit(action, OPERATOR, {"key": key}, details)
        uow.commit()


# --- what the operator does next ----------------------------------------------------------


def _report(
    escrow: Escrow, plan: _Plan, retired: list[str], rewrapped: int, repaired: int
) -> RotationReport:
    configure = _configuration_changes(escrow, plan)
    destroyable = [] if configure else _destroyable(escrow.settings, plan, retired)
    return RotationReport(
        plan.key, rewrapped, plan.resumed, retired, repaired, configure, destroyable
    )


def _configuration_changes(escrow: Escrow, plan: _Plan) -> list[str]:
    """The settings that make the broker wrap new secrets with the target (none if it does)."""
    current = _current(escrow.custody)
    wraps_with = f"local:{current.key_id}" if isinstance(current, LocalCustody) else _probe(current)
    if wraps_with == plan.key:
        return []
    changes = []
    if escrow.settings.key_custody != plan.target.name:
        changes.append(f"ESCROW_KEY_CUSTODY={plan.target.name}")
    if plan.target.name == "aws-kms":  # the key's ARN, which names its region too
        changes.append(f"ESCROW_KMS_KEY_ID={plan.key.removeprefix('aws-kms:')}")
    return changes


def _destroyable(settings: Settings, plan: _Plan, retired: list[str]) -> list[str]:
    """Old key material no wrapped secret needs any more."""
    found = [
        f"{path} (retired local key {path.name.rsplit('.', 1)[1]})"
        for path in _retired_key_files(settings.key_file)
        if f"local:{path.name.rsplit('.', 1)[1]}" != plan.key
    ]
    if plan.target.name != "local" and settings.key_file.exists():
        found.append(f"{settings.key_file} (the local master key) and its trustee shares")
    found += [
        f"KMS key {key.removeprefix('aws-kms:')} (schedule its deletion; KMS waits 7-30 days)"
        for key in retired
        if key.startswith("aws-kms:")
    ]
    return found


def _retired_key_files(key_file: Path) -> list[Path]:
    prefix = key_file.name + "."
    return sorted(
        path
        for path in key_file.parent.glob(prefix + "*")
        if is_key_id(path.name.removeprefix(prefix))
    )
