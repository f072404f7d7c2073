"""A deposit's files on their way in: an upload started (or resumed, or started over when the
store lost it) for one file, its parts presigned, its age header registered, its upload completed
and checked against what the client reports. Opening and finalising the deposit, and its layout
in the bucket, are in `deposits.py`.
"""

from __future__ import annotations

import hashlib
import json
import logging

from broker import age
from broker.adapters.db.models import Deposit, DepositFile
from broker.adapters.db.uow import UnitOfWork
from broker.adapters.objectstore.base import UploadedPart
from broker.container import Escrow
from broker.domain.access import Action
from broker.domain.events import AuditAction
from broker.domain.parts import payload_size, plain_part_size, plan_parts
from broker.domain.principals import Principal
from broker.domain.states import FileState
from broker.errors import (
    Conflict,
    InvalidInput,
    NotSupported,
    ObjectMissing,
    UploadLost,
)
from broker.services.deposits import (
    abort_upload,
    deposit_identity,
    deposit_prefix,
    file_of,
    forget_lost_upload,
    get_deposit,
    header_key,
    payload_key,
    require_open,
    reset_file,
)
from broker.services.views_types import (
    FileCompleted,
    HeaderRegistered,
    PresignedPart,
    UploadedPartView,
    UploadStart,
)

log = logging.getLogger(__name__)
MAX_HEADER_SIZE = 64 * 1024


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
    require_open(deposit)
    file = file_of(deposit, index)
    key = deposit_prefix(deposit.id) + payload_key(index)
    if restart and file.state != FileState.PENDING:
        abort_upload(escrow, deposit, file)
        reset_file(file)
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
            forget_lost_upload(uow, actor, deposit, file)
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


def _upload_lost(
    uow: UnitOfWork, actor: Principal, deposit: Deposit, file: DepositFile
) -> UploadLost:
    """Reset a file whose upload the store lost (committed) and say so to the client."""
    forget_lost_upload(uow, actor, deposit, file)
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
    require_open(deposit)
    file = file_of(deposit, index)
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
    require_open(deposit)
    file = file_of(deposit, index)
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
    require_open(deposit)
    file = file_of(deposit, index)
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
    _assemble(escrow, uow, actor, deposit, file, key, file.upload_id, reported)
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


def _assemble(
    escrow: Escrow,
    uow: UnitOfWork,
    actor: Principal,
    deposit: Deposit,
    file: DepositFile,
    key: str,
    upload_id: str,
    reported: dict[int, UploadedPart] | None,
) -> None:
    """Complete the multipart upload at `key` from its parts and check the payload's size. An
    upload the store lost, or a payload of another size, resets the file (committed) and raises."""
    try:
        uploaded = _uploaded_parts(escrow, key, upload_id, reported)
    except ObjectMissing:
        raise _upload_lost(uow, actor, deposit, file) from None
    _require_every_part(file, uploaded)
    try:
        escrow.store.complete_multipart(key, upload_id, [uploaded[n] for n in sorted(uploaded)])
    except ObjectMissing:
        raise _upload_lost(uow, actor, deposit, file) from None
    stored = escrow.store.head(key)
    expected = payload_size(file.size)
    if stored is None or stored.size != expected:
        escrow.store.delete(key)
        reset_file(file)
        uow.commit()
        raise InvalidInput(
            f"payload of {file.path!r} is {stored.size if stored else 0} bytes, "
            f"expected {expected}",
            hint="the file's upload was discarded; run the same `escrow deposit` command again",
        )


def _require_every_part(file: DepositFile, uploaded: dict[int, UploadedPart]) -> None:
    """Each planned part uploaded with exactly its size, and no other part."""
    planned = plan_parts(file.size)
    problems = []
    for part in planned:
        got = uploaded.get(part.number)
        if got is None:
            problems.append(f"part {part.number} is missing")
        elif got.size != part.cipher_size:
            problems.append(f"part {part.number} is {got.size} bytes, expected {part.cipher_size}")
    if problems or len(uploaded) != len(planned):
        raise InvalidInput(
            f"upload of {file.path!r} is not complete: {'; '.join(problems) or 'extra parts'}",
            hint="run the same `escrow deposit` command again to send the missing parts",
        )
