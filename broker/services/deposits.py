"""Deposit use cases: open (or resume) a deposit, upload files through the store, finalise.

Bytes of weights never pass through here: clients upload ciphertext with URLs the store
presigns. The broker alone chooses object keys, and presigns only uploads it created.
"""

from __future__ import annotations

import hashlib
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
from broker.adapters.objectstore.base import UploadedPart
from broker.container import Escrow
from broker.domain.access import Action, authorize
from broker.domain.events import AuditAction
from broker.domain.names import check_file_path, check_layout, check_version, split_model_name
from broker.domain.parts import MAX_PAYLOAD_SIZE, payload_size, plain_part_size, plan_parts
from broker.domain.principals import Principal
from broker.domain.states import DepositState, FileState
from broker.errors import (
    Conflict,
    EscrowError,
    InvalidInput,
    NotFound,
    NotSupported,
    ObjectMissing,
    UploadLost,
)
from broker.services.admin import get_org
from broker.services.views_types import (
    DepositView,
    FileCompleted,
    HeaderRegistered,
    PresignedPart,
    UploadedPartView,
    UploadStart,
    VerificationView,
)

log = logging.getLogger(__name__)
MAX_HEADER_SIZE = 64 * 1024
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


def header_key(index: int) -> str:
    return f"files/{index}.header"


def payload_key(index: int) -> str:
    return f"files/{index}.payload"


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
            _abort_upload(escrow, deposit, file)
            deposit.files.remove(file)
        elif file.state == FileState.FAILED:
            _abort_upload(escrow, deposit, file)
            _reset(file)
        elif file.state == FileState.UPLOADED and _objects_gone(escrow, deposit, file):
            _forget_lost_upload(uow, actor, deposit, file)
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


def _reset(file: DepositFile) -> None:
    file.state, file.upload_id, file.header, file.sha256, file.error = (
        FileState.PENDING,
        None,
        None,
        None,
        None,
    )


def _abort_upload(escrow: Escrow, deposit: Deposit, file: DepositFile) -> None:
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


def _file(deposit: Deposit, index: int) -> DepositFile:
    for file in deposit.files:
        if file.idx == index:
            return file
    raise NotFound(
        f"deposit {deposit.id} has no file number {index}", hint="list its files with GET"
    )


def _require_open(deposit: Deposit) -> None:
    if deposit.state != OPEN:
        raise Conflict(
            f"deposit {deposit.id} is {deposit.state}, not open for uploads",
            hint="a sealed version is immutable; a failed one reopens when deposited again",
        )


def start_upload(
    escrow: Escrow, uow: UnitOfWork, actor: Principal, deposit_id: str, index: int, restart: bool
) -> UploadStart:
    """Begin (or resume) the upload of one file; `restart` discards what was sent before.

    An upload the store no longer knows (an S3 lifecycle rule aborted it, the store was restored
    from a backup) is healed here: the file starts over on a new upload, `upload_lost` says so,
    and `upload` (a reference to the store upload) changes, so the client encrypts the file
    again under a new key instead of mixing keys or reusing a nonce.
    """
    deposit = get_deposit(uow, actor, deposit_id, Action.DEPOSIT_UPLOAD)
    _require_open(deposit)
    file = _file(deposit, index)
    key = deposit_prefix(deposit.id) + payload_key(index)
    if restart and file.state != FileState.PENDING:
        _abort_upload(escrow, deposit, file)
        _reset(file)
        subject = {"deposit": deposit.id, "path": file.path}
        uow.audit(AuditAction.DEPOSIT_FILE_RESTARTED, actor, subject)
    parts: list[UploadedPartView] = []
    lost = False
    if file.state == FileState.UPLOADING:
        try:
            parts = [
                {"number": p.number, "size": p.size, "etag": p.etag}
                for p in escrow.store.list_parts(key, file.upload_id or "")
            ]
        except ObjectMissing:
            _forget_lost_upload(uow, actor, deposit, file)
            lost = True
        except NotSupported:
            # A store without ListParts (README, "S3 compatibility"): no part is known, so the
            # client sends every part again (under the same key only if its journal proves the
            # plaintext unchanged) and reports them all at completion.
            log.info("the store cannot list parts of %s: the client re-sends them", key)
    if file.state == FileState.PENDING:
        file.upload_id = escrow.store.create_multipart(
            key, [part.cipher_size for part in plan_parts(file.size)]
        )
        file.state = FileState.UPLOADING
    uow.commit()
    return {
        "index": file.idx,
        "path": file.path,
        "state": file.state,
        "part_size": plain_part_size(file.size),
        "payload_size": payload_size(file.size),
        "header_registered": file.header is not None,
        "parts": parts,
        "upload": upload_reference(file.upload_id),
        "upload_lost": lost,
    }


def upload_reference(upload_id: str | None) -> str | None:
    """A short, stable name for a store upload the client can journal (not the id itself)."""
    if not upload_id:
        return None
    return hashlib.sha256(upload_id.encode()).hexdigest()[:16]


def _objects_gone(escrow: Escrow, deposit: Deposit, file: DepositFile) -> bool:
    """Whether an uploaded file's header or payload is missing from the store (a store
    restored from an older backup, a new bucket): its upload must be made again."""
    prefix = deposit_prefix(deposit.id)
    return any(
        escrow.store.head(prefix + key) is None
        for key in (header_key(file.idx), payload_key(file.idx))
    )


def _forget_lost_upload(
    uow: UnitOfWork, actor: Principal, deposit: Deposit, file: DepositFile
) -> None:
    """The store does not know the file's upload any more: back to pending (its parts and
    header are gone with it), recorded on the log."""
    _reset(file)
    uow.audit(AuditAction.DEPOSIT_UPLOAD_LOST, actor, {"deposit": deposit.id, "path": file.path})


def _upload_lost(
    uow: UnitOfWork, actor: Principal, deposit: Deposit, file: DepositFile
) -> UploadLost:
    """Reset a file whose upload the store lost (committed) and say so to the client."""
    _forget_lost_upload(uow, actor, deposit, file)
    uow.commit()
    return UploadLost(
        f"the object store no longer has the upload of {file.path!r} (aborted by a lifecycle "
        "rule, or the store was restored); the broker reset the file to start over",
        hint="run the same `escrow deposit` command again: it encrypts the file under a new "
        "key and uploads it anew (current clients do this by themselves)",
    )


def presign_parts(
    escrow: Escrow,
    uow: UnitOfWork,
    actor: Principal,
    deposit_id: str,
    index: int,
    numbers: object,  # the request's JSON, checked here
) -> list[PresignedPart]:
    deposit = get_deposit(uow, actor, deposit_id, Action.DEPOSIT_UPLOAD)
    _require_open(deposit)
    file = _file(deposit, index)
    if file.state != FileState.UPLOADING or not file.upload_id:
        raise Conflict(
            f"file {file.path!r} has no upload in progress",
            hint="start it with POST …/upload first",
        )
    count = len(plan_parts(file.size))
    if not isinstance(numbers, list):
        raise InvalidInput("'numbers' must be a list of part numbers", hint='e.g. {"numbers": [1]}')
    bad = [n for n in numbers if not isinstance(n, int) or not 1 <= n <= count]
    if bad or not numbers or len(numbers) > 100:
        raise InvalidInput(
            f"part numbers {bad or numbers!r} are not valid for {file.path!r}",
            hint=f"ask for 1 to 100 part numbers between 1 and {count}",
        )
    key = deposit_prefix(deposit.id) + payload_key(index)
    ttl = escrow.settings.upload_url_ttl_s
    sizes = {p.number: p.cipher_size for p in plan_parts(file.size)}
    urls: list[PresignedPart] = []
    for number in numbers:
        try:
            signed = escrow.store.presign_upload_part(
                key, file.upload_id, number, ttl, sizes[number]
            )
        except ObjectMissing:  # the local store checks the upload; S3 presigns blindly
            raise _upload_lost(uow, actor, deposit, file) from None
        urls.append(
            {
                "number": number,
                "method": signed.method,
                "url": signed.url,
                "headers": signed.headers,
                "expires_at": signed.expires_at.isoformat(),
            }
        )
    return urls


def register_header(
    escrow: Escrow, uow: UnitOfWork, actor: Principal, deposit_id: str, index: int, header: bytes
) -> HeaderRegistered:
    """Accept a file's age header only if the deposit's escrow identity can open it."""
    deposit = get_deposit(uow, actor, deposit_id, Action.DEPOSIT_UPLOAD)
    _require_open(deposit)
    file = _file(deposit, index)
    if file.state != FileState.UPLOADING:
        raise Conflict(f"file {file.path!r} is {file.state}", hint="start its upload first")
    if len(header) > MAX_HEADER_SIZE:
        raise InvalidInput(
            f"header of {file.path!r} is {len(header)} bytes, larger than {MAX_HEADER_SIZE}",
            hint="send only the age header (up to the line starting with '---')",
        )
    identity = deposit_identity(escrow, deposit)
    try:
        age.unwrap_file_key(header, [identity])
    except age.AgeError as error:
        raise InvalidInput(
            f"header of {file.path!r} does not open with this deposit's escrow identity: {error}",
            hint=f"encrypt the file to the deposit's recipient {deposit.recipient}",
        ) from None
    declared = [identity.to_recipient()] + [
        age.parse_recipient(r) for r in json.loads(deposit.extra_recipients or "[]")
    ]
    unexpected = age.unexpected_stanzas(header, declared)
    if unexpected:
        raise InvalidInput(
            f"header of {file.path!r} wraps the file key for more than the deposit declared: "
            f"{', '.join(unexpected)} beyond the escrow recipient and the "
            f"{len(declared) - 1} extra recipient(s) given when the deposit was opened",
            hint="encrypt to the deposit's recipient and the declared extra recipients only "
            "(age with a grease stanza, as rage writes, is refused too); an extra recipient is "
            "declared when the deposit is opened (extra_recipients)",
        )
    if not deposit.classical and not age.header_post_quantum(header):
        deposit.classical = True
        subject = {"deposit": deposit.id, "path": file.path}
        uow.audit(AuditAction.DEPOSIT_MARKED_CLASSICAL, actor, subject)
    file.header = header
    uow.commit()
    return {"index": file.idx, "header_registered": True, "classical": deposit.classical}


def deposit_identity(escrow: Escrow, deposit: Deposit) -> age.Identity:
    return unwrap_identity(escrow, deposit.id, deposit.wrapped_identity)


def unwrap_identity(escrow: Escrow, deposit_id: str, wrapped: bytes) -> age.Identity:
    """The deposit's escrow identity, unwrapped through key custody (kept in memory only)."""
    secret = escrow.custody.unwrap(wrapped, identity_context(deposit_id))
    return age.parse_identities(secret.decode())[0]


def parse_reported_parts(raw: object) -> dict[int, UploadedPart] | None:
    """The parts a client says it uploaded (`[{number, size, etag}, …]`: each PUT's ETag), or
    None if it sent none. Used only where the store cannot list an upload's parts; then S3
    still checks every ETag at completion (s3rver does not), the broker checks the assembled
    size, and the verification decrypts every byte before the deposit is sealed."""
    if raw is None:
        return None
    hint = 'send "parts": [{"number": 1, "size": 123, "etag": "…"}, …], one per part uploaded'
    if not isinstance(raw, list):
        raise InvalidInput(f"'parts' must be a list, not {type(raw).__name__}", hint=hint)
    parts: dict[int, UploadedPart] = {}
    for item in raw:
        number = item.get("number") if isinstance(item, dict) else None
        size = item.get("size") if isinstance(item, dict) else None
        etag = item.get("etag") if isinstance(item, dict) else None
        if (
            not isinstance(number, int)
            or isinstance(number, bool)
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or not isinstance(etag, str)
            or not 0 < len(etag.strip('"')) <= 128
            or not etag.strip('"').isprintable()
            or '"' in etag.strip('"')
        ):
            raise InvalidInput(
                "each of 'parts' must be {number, size, etag}: integers and the ETag the "
                "store answered to the part's PUT",
                hint=hint,
            )
        if number in parts:
            raise InvalidInput(f"part {number} is listed twice in 'parts'", hint=hint)
        parts[number] = UploadedPart(number=number, size=size, etag=etag.strip('"'))
    return parts


def _uploaded_parts(
    escrow: Escrow, key: str, upload_id: str, reported: dict[int, UploadedPart] | None
) -> dict[int, UploadedPart]:
    """The upload's parts as the store lists them; where it cannot (no ListParts), as the
    client reported them."""
    try:
        return {p.number: p for p in escrow.store.list_parts(key, upload_id)}
    except NotSupported as error:
        if reported is None:
            raise NotSupported(
                f"{error.message}; and the client did not report the parts it uploaded",
                hint="update the escrow client (current clients report their parts at "
                'completion), or use a store with ListParts (README, "S3 compatibility")',
            ) from None
        return reported


def complete_upload(
    escrow: Escrow,
    uow: UnitOfWork,
    actor: Principal,
    deposit_id: str,
    index: int,
    sha256: str,
    reported_parts: object = None,
) -> FileCompleted:
    """Assemble the uploaded parts once each has exactly the expected size.

    `reported_parts`: what the client uploaded (`parse_reported_parts`), used only where the
    store cannot list parts."""
    deposit = get_deposit(uow, actor, deposit_id, Action.DEPOSIT_UPLOAD)
    _require_open(deposit)
    file = _file(deposit, index)
    if file.state == FileState.UPLOADED and file.sha256 == sha256:
        return {"index": file.idx, "state": file.state}
    if file.state != FileState.UPLOADING or file.header is None or not file.upload_id:
        raise Conflict(
            f"file {file.path!r} cannot be completed while {file.state} "
            f"({'header registered' if file.header else 'no header yet'})",
            hint="register the header and upload every part first",
        )
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise InvalidInput("sha256 must be 64 lowercase hex digits", hint="send the plaintext hash")
    reported = parse_reported_parts(reported_parts)
    prefix = deposit_prefix(deposit.id)
    key = prefix + payload_key(index)
    try:
        uploaded = _uploaded_parts(escrow, key, file.upload_id, reported)
    except ObjectMissing:
        raise _upload_lost(uow, actor, deposit, file) from None
    problems = []
    for part in plan_parts(file.size):
        got = uploaded.get(part.number)
        if got is None:
            problems.append(f"part {part.number} is missing")
        elif got.size != part.cipher_size:
            problems.append(f"part {part.number} is {got.size} bytes, expected {part.cipher_size}")
    if problems or len(uploaded) != len(plan_parts(file.size)):
        raise InvalidInput(
            f"upload of {file.path!r} is not complete: {'; '.join(problems) or 'extra parts'}",
            hint="run the same `escrow deposit` command again to send the missing parts",
        )
    try:
        escrow.store.complete_multipart(
            key, file.upload_id, [uploaded[n] for n in sorted(uploaded)]
        )
    except ObjectMissing:
        raise _upload_lost(uow, actor, deposit, file) from None
    stored = escrow.store.head(key)
    expected = payload_size(file.size)
    if stored is None or stored.size != expected:
        escrow.store.delete(key)
        _reset(file)
        uow.commit()
        raise InvalidInput(
            f"payload of {file.path!r} is {stored.size if stored else 0} bytes, "
            f"expected {expected}",
            hint="the file's upload was discarded; run the same `escrow deposit` command again",
        )
    escrow.store.put_bytes(prefix + header_key(index), file.header)
    file.state, file.sha256, file.upload_id = FileState.UPLOADED, sha256, None
    uow.audit(
        AuditAction.DEPOSIT_FILE_UPLOADED,
        actor,
        {"deposit": deposit.id, "path": file.path},
        {"size": file.size, "sha256": sha256},
    )
    uow.commit()
    return {"index": file.idx, "state": file.state}


def finalize(escrow: Escrow, uow: UnitOfWork, actor: Principal, deposit_id: str) -> Deposit:
    """Queue the verification that decrypts, hashes and then seals the deposit."""
    deposit = get_deposit(uow, actor, deposit_id, Action.DEPOSIT_UPLOAD)
    if deposit.state in (VERIFYING, SEALED):
        return deposit
    _require_open(deposit)
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
    gone = [f for f in deposit.files if _objects_gone(escrow, deposit, f)]
    if gone:
        for file in gone:
            _forget_lost_upload(uow, actor, deposit, file)
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
    }


def _verification(deposit: Deposit) -> VerificationView | None:
    """The deposit's newest verification, as the depositor's wait shows it (None: none): its
    per-file jobs taken together. `state` is running while any job runs, else queued while any
    waits, else failed if any failed, else done; `attempts` the most any job took; `error` a
    failed job's, else the last error of a job to be retried; `next_attempt_at` when the first
    waiting job may run (None if one may run now); `worker` the workers running it, and
    `heartbeat_at` the latest of their heartbeats."""
    jobs = _newest_round(deposit.jobs)
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
