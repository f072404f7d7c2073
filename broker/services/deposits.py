"""Deposit use cases: open (or resume) a deposit, finalise it, describe it; its layout in the
bucket. Uploading its files is in `deposit_uploads.py`.

Bytes of weights never pass through here: clients upload ciphertext with URLs the store
presigns. The broker alone chooses object keys, and presigns only uploads it created.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from broker import age
from broker.adapters.db.models import Deposit, DepositFile, Job, Model
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain.access import Action, authorize
from broker.domain.events import AuditAction
from broker.domain.names import check_file_path, check_layout, check_version, split_model_name
from broker.domain.parts import MAX_PAYLOAD_SIZE, payload_size
from broker.domain.principals import Principal
from broker.domain.states import DepositState, FileState
from broker.errors import (
    Conflict,
    EscrowError,
    InvalidInput,
    NotFound,
    NotSupported,
    UploadLost,
)
from broker.services.admin import get_org
from broker.services.views_types import (
    DepositView,
    VerificationView,
)

log = logging.getLogger(__name__)
OPEN, VERIFYING, SEALED, FAILED = (
    DepositState.OPEN,
    DepositState.VERIFYING,
    DepositState.SEALED,
    DepositState.FAILED,
)


@dataclass(frozen=True)
class PlannedFile:
    path: str
    size: int


def deposit_prefix(deposit_id: str) -> str:
    return f"deposits/{deposit_id}/"


def header_key(index: int, generation: int = 0) -> str:
    """A file's escrow header, relative to the deposit's prefix. A rekey writes generation n
    under new names (`files/<i>.r<n>.header`) and never overwrites the objects serving."""
    return f"files/{index}.header" if not generation else f"files/{index}.r{generation}.header"


def payload_key(index: int, generation: int = 0) -> str:
    return f"files/{index}.payload" if not generation else f"files/{index}.r{generation}.payload"


def file_index(key: str) -> int:
    """The file number in a header or payload key (either generation)."""
    return int(key.removeprefix("files/").split(".", 1)[0])


def identity_context(deposit_id: str) -> dict[str, str]:
    return {"purpose": "deposit-identity", "deposit": deposit_id}


def identity_object(deposit_id: str) -> str:
    """The bucket's copy of the wrapped identity (a key rotation rewrites it with the row)."""
    return deposit_prefix(deposit_id) + "identity.wrapped"


def parse_plan(raw_files: object) -> list[PlannedFile] | None:
    """The file list of an open request (`[{path, size}, …]`, or None to keep the deposit's),
    each value checked, and the set obeying the one layout rule (`names.check_layout`)."""
    if raw_files is None:
        return None
    if not isinstance(raw_files, list):
        raise InvalidInput(
            f"'files' must be a list of {{path, size}} objects, not {type(raw_files).__name__}",
            hint='send e.g. "files": [{"path": "model.safetensors", "size": 123}]',
        )
    plan = []
    for number, item in enumerate(raw_files):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise InvalidInput(
                f"files[{number}] must be an object with a string 'path' and a 'size'",
                hint="send each file as {path, size}",
            )
        size = item.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(
                f"file {item['path']!r}: size must be a non-negative integer",
                hint="send each file as {path, size}",
            )
        if payload_size(size) > MAX_PAYLOAD_SIZE:
            raise InvalidInput(
                f"file {item['path']!r} is {size} bytes; encrypted, it would not fit in one "
                f"object of the store ({MAX_PAYLOAD_SIZE} bytes at most)",
                hint="split the file into shards (safetensors shards of a few GB are usual)",
            )
        plan.append(PlannedFile(check_file_path(item["path"]), size))
    check_layout(f.path for f in plan)
    return sorted(plan, key=lambda f: f.path)


def open_deposit(
    escrow: Escrow,
    uow: UnitOfWork,
    actor: Principal,
    model_name: str,
    version: str,
    files: object,
    classical: bool = False,
    extra_recipients: list[str] | None = None,
) -> Deposit:
    """Create the deposit of a model version, or return the existing one to resume it.
    `files`: the request's file list, read (`parse_plan`) only once the caller may deposit;
    None keeps the deposit's files."""
    org_name, short_name = split_model_name(model_name)
    check_version(version)
    authorize(actor, Action.DEPOSIT_CREATE, org_name)
    plan = parse_plan(files)
    org = get_org(uow, org_name)
    extras = [age.parse_recipient(r) for r in extra_recipients or []]
    written = None  # the identity object this call wrote: removed unless its row is committed
    try:
        model = uow.session.scalar(
            select(Model).where(Model.org_id == org.id, Model.name == short_name)
        )
        if model is None:
            model = Model(org_id=org.id, name=short_name)
            uow.session.add(model)
            uow.session.flush()
            uow.audit(AuditAction.MODEL_CREATED, actor, {"model": model_name})
        deposit = uow.session.scalar(
            select(Deposit).where(Deposit.model_id == model.id, Deposit.version == version)
        )
        if deposit is None:
            deposit = _new_deposit(
                escrow, uow, actor, model, model_name, version, classical, extras
            )
            written = identity_object(deposit.id)
        elif deposit.state == SEALED:
            if plan is not None and _plan_of(deposit) != plan:
                raise Conflict(
                    f"{model_name}@{version} is sealed with different files",
                    hint="a sealed version is immutable; deposit the new content as a new "
                    "--version",
                )
            return deposit
        if plan is not None and deposit.state in (OPEN, FAILED):
            _apply_plan(escrow, uow, actor, deposit, plan)
        uow.commit()
    except BaseException as error:
        if written is not None:
            _remove_quietly(escrow, written)
        if isinstance(error, IntegrityError):  # a concurrent open of the same model or version
            raise Conflict(
                f"{model_name}@{version} was opened by another request at the same time",
                hint="run the same command again: it resumes the deposit that request opened",
            ) from None
        raise
    return deposit


def _remove_quietly(escrow: Escrow, key: str) -> None:
    """Remove an object this request wrote for a change that was not committed."""
    try:
        escrow.store.delete(key)
    except EscrowError as error:
        log.warning("could not remove %s after a failed change: %s", key, error)


def _new_deposit(
    escrow: Escrow,
    uow: UnitOfWork,
    actor: Principal,
    model: Model,
    model_name: str,
    version: str,
    classical: bool,
    extras: list[age.Recipient],
) -> Deposit:
    deposit_id = secrets.token_hex(16)
    # Post-quantum by default: weights held for decades must survive "harvest now, decrypt later".
    identity = age.generate_x25519_identity() if classical else age.generate_hybrid_identity()
    recipient = identity.to_recipient()
    wrapped = escrow.custody.wrap(identity.encode().encode(), identity_context(deposit_id))
    weakened = not classical and any(not r.post_quantum for r in extras)
    deposit = Deposit(
        id=deposit_id,
        model_id=model.id,
        version=version,
        state=OPEN,
        recipient=str(recipient),
        recipient_type="x25519" if classical else "mlkem768x25519",
        extra_recipients=json.dumps([str(r) for r in extras]),
        classical=classical or weakened,
        wrapped_identity=wrapped,
        created_by=actor.id,
    )
    uow.session.add(deposit)
    uow.session.flush()
    uow.audit(
        AuditAction.DEPOSIT_CREATED,
        actor,
        {"deposit": deposit_id, "model": model_name, "version": version},
        {"recipient": str(recipient), "classical": deposit.classical},
    )
    # Last, once the row is made: the caller removes it if the transaction then fails.
    escrow.store.put_bytes(identity_object(deposit_id), wrapped)
    return deposit


def _plan_of(deposit: Deposit) -> list[PlannedFile]:
    return [PlannedFile(f.path, f.size) for f in sorted(deposit.files, key=lambda f: f.path)]


def _apply_plan(
    escrow: Escrow, uow: UnitOfWork, actor: Principal, deposit: Deposit, plan: list[PlannedFile]
) -> None:
    """Make the deposit's files match the plan, keeping files whose path and size are unchanged."""
    wanted = {f.path: f.size for f in plan}
    for file in list(deposit.files):
        if wanted.get(file.path) != file.size:
            abort_upload(escrow, deposit, file)
            deposit.files.remove(file)
        elif file.state == FileState.FAILED:
            abort_upload(escrow, deposit, file)
            reset_file(file)
        elif file.state == FileState.UPLOADED and objects_gone(escrow, deposit, file):
            forget_lost_upload(uow, actor, deposit, file)
    uow.session.flush()
    known = {f.path for f in deposit.files}
    next_index = max((f.idx for f in deposit.files), default=-1) + 1
    for planned in plan:
        if planned.path in known:
            continue
        deposit.files.append(
            DepositFile(
                idx=next_index, path=planned.path, size=planned.size, state=FileState.PENDING
            )
        )
        next_index += 1
    if deposit.state == FAILED:
        deposit.state, deposit.failure = OPEN, None
        uow.audit(AuditAction.DEPOSIT_REOPENED, actor, {"deposit": deposit.id})
    uow.session.flush()


def reset_file(file: DepositFile) -> None:
    file.state, file.upload_id, file.header, file.sha256, file.error = (
        FileState.PENDING,
        None,
        None,
        None,
        None,
    )


def abort_upload(escrow: Escrow, deposit: Deposit, file: DepositFile) -> None:
    if file.upload_id:
        key = deposit_prefix(deposit.id) + payload_key(file.idx)
        try:
            escrow.store.abort_multipart(key, file.upload_id)
        except NotSupported as error:
            # A store without AbortMultipartUpload (s3rver): the file starts over on a new
            # upload all the same; the old one's parts stay until the store discards them.
            log.warning("upload of %s left in the store: %s", key, error)


def get_deposit(uow: UnitOfWork, actor: Principal, deposit_id: str, action: Action) -> Deposit:
    deposit = uow.session.get(Deposit, deposit_id)
    if deposit is None:
        raise NotFound(f"deposit {deposit_id!r} does not exist", hint="check the deposit id")
    authorize(actor, action, deposit.model.organisation.name)
    return deposit


def file_of(deposit: Deposit, index: int) -> DepositFile:
    for file in deposit.files:
        if file.idx == index:
            return file
    raise NotFound(
        f"deposit {deposit.id} has no file number {index}", hint="list its files with GET"
    )


def require_open(deposit: Deposit) -> None:
    if deposit.state != OPEN:
        raise Conflict(
            f"deposit {deposit.id} is {deposit.state}, not open for uploads",
            hint="a sealed version is immutable; a failed one reopens when deposited again",
        )


def objects_gone(escrow: Escrow, deposit: Deposit, file: DepositFile) -> bool:
    """Whether an uploaded file's header or payload is missing from the store (a store
    restored from an older backup, a new bucket): its upload must be made again."""
    prefix = deposit_prefix(deposit.id)
    return any(
        escrow.store.head(prefix + key) is None
        for key in (header_key(file.idx, deposit.generation),
                    payload_key(file.idx, deposit.generation))
    )


def forget_lost_upload(
    uow: UnitOfWork, actor: Principal, deposit: Deposit, file: DepositFile
) -> None:
    """The store does not know the file's upload any more: back to pending (its parts and
    header are gone with it), recorded on the log."""
    reset_file(file)
    uow.audit(AuditAction.DEPOSIT_UPLOAD_LOST, actor, {"deposit": deposit.id, "path": file.path})


def deposit_identity(escrow: Escrow, deposit: Deposit) -> age.Identity:
    return unwrap_identity(escrow, deposit.id, deposit.wrapped_identity)


def unwrap_identity(escrow: Escrow, deposit_id: str, wrapped: bytes) -> age.Identity:
    """The deposit's escrow identity, unwrapped through key custody (kept in memory only)."""
    secret = escrow.custody.unwrap(wrapped, identity_context(deposit_id))
    return age.parse_identities(secret.decode())[0]


def finalize(escrow: Escrow, uow: UnitOfWork, actor: Principal, deposit_id: str) -> Deposit:
    """Queue the verification that decrypts, hashes and then seals the deposit."""
    deposit = get_deposit(uow, actor, deposit_id, Action.DEPOSIT_UPLOAD)
    if deposit.state in (VERIFYING, SEALED):
        return deposit
    require_open(deposit)
    waiting = [f.path for f in deposit.files if f.state != FileState.UPLOADED]
    if waiting or not deposit.files:
        raise Conflict(
            f"deposit {deposit.id} cannot be finalised: "
            + (
                f"{len(waiting)} file(s) not uploaded ({', '.join(waiting[:5])})"
                if waiting
                else "it has no files"
            ),
            hint="run the same `escrow deposit` command again to finish the uploads",
        )
    gone = [f for f in deposit.files if objects_gone(escrow, deposit, f)]
    if gone:
        for file in gone:
            forget_lost_upload(uow, actor, deposit, file)
        uow.commit()
        raise UploadLost(
            f"deposit {deposit.id} cannot be finalised: the object store no longer has "
            f"{len(gone)} uploaded file(s) ({', '.join(f.path for f in gone[:5])}); the broker "
            "reset them to be uploaded again",
            hint="run the same `escrow deposit` command again: it uploads them anew",
        )
    deposit.state = VERIFYING
    for file in sorted(deposit.files, key=lambda f: f.path):  # a job per file: workers split it
        uow.session.add(
            Job(kind="verify", deposit_id=deposit.id, file_idx=file.idx, state="queued")
        )
    counted = {"files": len(deposit.files)}
    uow.audit(AuditAction.DEPOSIT_FINALIZED, actor, {"deposit": deposit.id}, counted)
    uow.commit()
    return deposit


def describe(deposit: Deposit) -> DepositView:
    return {
        "deposit_id": deposit.id,
        "model": deposit.model.full_name,
        "version": deposit.version,
        "state": DepositState(deposit.state),
        "recipient": deposit.recipient,
        "recipient_type": deposit.recipient_type,
        "classical": deposit.classical,
        "created_at": deposit.created_at.isoformat(),
        "sealed_at": deposit.sealed_at.isoformat() if deposit.sealed_at else None,
        "last_verified_at": (
            deposit.last_verified_at.isoformat() if deposit.last_verified_at else None
        ),
        "failure": deposit.failure,
        "failure_hint": deposit.failure_hint,
        "verification": _verification(deposit),
        "files": [
            {
                "index": f.idx,
                "path": f.path,
                "size": f.size,
                "state": f.state,
                "sha256": f.sha256,
                "error": f.error,
            }
            for f in sorted(deposit.files, key=lambda f: f.path)
        ],
        "quarantined_at": (
            deposit.quarantined_at.isoformat() if deposit.quarantined_at else None
        ),
        "quarantine_reason": deposit.quarantine_reason,
    }


def _verification(deposit: Deposit) -> VerificationView | None:
    """The deposit's newest verification, as the depositor's wait shows it (None: none): its
    per-file jobs taken together. `state` is running while any job runs, else queued while any
    waits, else failed if any failed, else done; `attempts` the most any job took; `error` a
    failed job's, else the last error of a job to be retried; `next_attempt_at` when the first
    waiting job may run (None if one may run now); `worker` the workers running it, and
    `heartbeat_at` the latest of their heartbeats."""
    jobs = _newest_round([j for j in deposit.jobs if j.kind == "verify"])  # not a rekey
    if not jobs:
        return None
    running = [j for j in jobs if j.state == "running"]
    queued = [j for j in jobs if j.state == "queued"]
    failed = [j for j in jobs if j.state == "failed"]
    state = "running" if running else "queued" if queued else "failed" if failed else "done"
    errors = [j.error for j in failed + queued + running if j.error]
    waits = [j.run_after for j in queued]
    beats = [j.heartbeat_at for j in running if j.heartbeat_at]
    workers = list(dict.fromkeys(j.locked_by for j in running if j.locked_by))
    return {
        "state": state,
        "attempts": max(j.attempts for j in jobs),
        "error": errors[0] if errors else None,
        "next_attempt_at": (
            _iso(min(w for w in waits if w)) if state == "queued" and all(waits) else None
        ),
        "worker": ", ".join(workers) or None,
        "heartbeat_at": _iso(max(beats)) if beats else None,
    }


def _newest_round(jobs: list[Job]) -> list[Job]:
    """The jobs of the deposit's last finalisation: the last job if it checks the whole
    deposit, else the per-file jobs queued together with it (each file once)."""
    start = len(jobs)
    files: set[int] = set()
    while start > 0 and (idx := jobs[start - 1].file_idx) is not None and idx not in files:
        files.add(idx)
        start -= 1
    return jobs[start:] or jobs[-1:]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
