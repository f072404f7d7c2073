"""The worker's part of a rekey (`broker.services.rekey`): re-encrypt, check, switch, clean up.

1. Each file not yet done: its payload streamed from the store, decrypted and encrypted again
   under a fresh file key (`rekey_stream`), written under a new name (`deposits.payload_key`
   of the rekey's generation: the objects serving are never overwritten), with a fresh escrow
   header to the new identity (and the lab's own recipients, as at deposit); then read back,
   decrypted and hashed against the deposit's plaintext SHA-256. Only then is the file recorded
   done (`rekey_files`): a worker killed mid-file redoes that file under the same new names,
   overwriting its partial objects, and skips the files recorded.
2. The switch, in one transaction under the deposit's lock: the new headers, identity,
   recipient and generation, the bucket's manifest (signed) and identity.wrapped rewritten
   before the commit (a failed commit is undone by `rekey.fail_rekey`, which writes them back
   from the row), the release block lifted, `version.rekeyed` on the log.
3. The old objects removed from every copy, except those an Object Lock retention keeps (they
   stay until their date); the new ones copied to the mirror; the job ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, cast

from sqlalchemy import delete

from broker import age
from broker.adapters.db.models import Deposit, DepositFile, Rekey, RekeyFile, StoredObject
from broker.adapters.db.uow import UnitOfWork
from broker.adapters.objectstore.base import SupportsRetention
from broker.age.stream import ENCRYPTED_CHUNK_SIZE
from broker.container import Escrow
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import SYSTEM
from broker.errors import Conflict, StorageError, TamperDetected
from broker.services import copies
from broker.services.deposits import (
    deposit_identity,
    deposit_prefix,
    header_key,
    payload_key,
    unwrap_identity,
)
from broker.services.rekey import files_done, open_rekey, subject, write_bucket_copies
from broker.services.rekey_stream import Reencrypting
from broker.services.verification import Cancelled, check_payload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    rekey_id: int
    state: str
    generation: int
    wrapped_identity: bytes
    keep_lab_recipients: bool


def run_rekey(
    escrow: Escrow,
    deposit_id: str,
    *,
    cancelled: Callable[[], bool] = lambda: False,
    settle: Callable[[UnitOfWork], None] | None = None,
) -> None:
    """Run (or resume) the deposit's open rekey to its end; `settle` ends the job in the
    transaction of the last step (it raises if the job is no longer ours)."""
    plan = _start(escrow, deposit_id)
    if plan is not None and plan.state != "switched":
        _reencrypt_all(escrow, deposit_id, plan, cancelled)
        _recheck(escrow, deposit_id, plan)
        if cancelled():
            raise Cancelled("rekey stopped before the switch")
        _switch(escrow, deposit_id, plan.rekey_id)
    deleted, locked = _clean_up(escrow, deposit_id) if plan is not None else (0, 0)
    with escrow.uow() as uow:
        uow.session.get(Deposit, deposit_id, with_for_update=True)  # as every job's end
        if settle is not None:
            settle(uow)
        rekey = uow.session.get(Rekey, plan.rekey_id) if plan else None
        if rekey is not None and rekey.state == "switched":
            rekey.state, rekey.finished_at = "done", now()
            rekey.old_objects_deleted, rekey.old_objects_locked = deleted, locked
        uow.commit()


def _start(escrow: Escrow, deposit_id: str) -> Plan | None:
    """The deposit's open rekey, marked running; None if there is none (it ended already)."""
    with escrow.uow() as uow:
        rekey = open_rekey(uow, deposit_id)
        if rekey is None:
            return None
        if rekey.state == "queued":
            rekey.state = "running"
        plan = Plan(rekey.id, rekey.state, rekey.generation, rekey.wrapped_identity,
                    rekey.keep_lab_recipients)
        uow.commit()
    return plan


def _reencrypt_all(
    escrow: Escrow, deposit_id: str, plan: Plan, cancelled: Callable[[], bool]
) -> None:
    with escrow.uow() as uow:
        done = set(files_done(uow, plan.rekey_id))
        snapshot = copies.load_detached(uow, deposit_id)
    old_identity = deposit_identity(escrow, snapshot)
    new_identity = unwrap_identity(escrow, deposit_id, plan.wrapped_identity)
    lab_recipients = json.loads(snapshot.extra_recipients) if plan.keep_lab_recipients else []
    recipients = [new_identity.to_recipient()] + [age.parse_recipient(r) for r in lab_recipients]
    for file in sorted(snapshot.files, key=lambda f: f.idx):
        if file.idx in done:
            continue  # re-encrypted and checked by an earlier attempt
        header = _reencrypt_file(
            escrow, snapshot, file, plan.generation, (old_identity, new_identity),
            recipients, cancelled,
        )
        if cancelled():
            raise Cancelled("rekey stopped before a file was recorded")
        with escrow.uow() as uow:
            uow.session.merge(RekeyFile(rekey_id=plan.rekey_id, file_idx=file.idx, header=header))
            uow.commit()


def _reencrypt_file(
    escrow: Escrow,
    deposit: Deposit,
    file: DepositFile,
    generation: int,
    identities: tuple[age.Identity, age.Identity],
    recipients: list[age.Recipient],
    cancelled: Callable[[], bool],
) -> bytes:
    """Write the file's payload and header of `generation`, checked; the new header."""
    prefix = deposit_prefix(deposit.id)
    assert file.header is not None and file.sha256 is not None  # a sealed deposit's file
    old_key = age.unwrap_file_key(file.header, [identities[0]])
    new_key = age.new_file_key()
    header = age.new_header(new_key, recipients, allow_classical_with_pq=deposit.classical)
    new_payload = prefix + payload_key(file.idx, generation)
    with escrow.store.open_read(prefix + payload_key(file.idx, deposit.generation)) as source:
        reader = Reencrypting(source, old_key, new_key, file.size, cancelled)
        escrow.store.put_stream(
            new_payload, cast(BinaryIO, reader), age.encrypted_payload_size(file.size))
    if reader.sha256.hexdigest() != file.sha256:
        escrow.store.delete(new_payload)
        raise TamperDetected(
            f"the stored payload of {file.path!r} decrypts to SHA-256 "
            f"{reader.sha256.hexdigest()}, not the {file.sha256} deposited: nothing was switched",
            hint="run `escrow fixity run` to repair it from the mirror, then rekey again",
        )
    escrow.store.put_bytes(prefix + header_key(file.idx, generation), header)
    with escrow.store.open_read(new_payload) as written:  # hashed after writing, read back
        problem = check_payload(
            written, age.unwrap_file_key(header, [identities[1]]), file.size, file.sha256,
            cancelled,
        )
    if problem:
        raise StorageError(
            f"the re-encrypted {file.path!r} read back from the store does not check: {problem}",
            hint="the job retries; if it keeps failing, check the object store",
        )
    return header


def _recheck(escrow: Escrow, deposit_id: str, plan: Plan) -> None:
    """Before the switch: every new file's stored header is the one recorded, and its first
    chunk decrypts under it. A worker that lost its lease mid-file (a stall, a pause) may have
    finished writing that file after the next worker wrote and checked it, under another file
    key: such a file is forgotten, and the job retries it, instead of switching to objects
    nothing can decrypt."""
    with escrow.uow() as uow:
        headers = files_done(uow, plan.rekey_id)
        snapshot = copies.load_detached(uow, deposit_id)
    identity = unwrap_identity(escrow, deposit_id, plan.wrapped_identity)
    prefix = deposit_prefix(deposit_id)
    spoiled = [
        file for file in snapshot.files
        if file.idx in headers
        and not _first_chunk_opens(escrow, prefix, file, plan.generation, headers[file.idx],
                                   identity)
    ]
    if not spoiled:
        return
    with escrow.uow() as uow:
        uow.session.execute(delete(RekeyFile).where(
            RekeyFile.rekey_id == plan.rekey_id,
            RekeyFile.file_idx.in_([f.idx for f in spoiled])))
        uow.commit()
    raise StorageError(
        f"rekey of {deposit_id}: the new objects of {', '.join(f.path for f in spoiled)} were "
        "overwritten after they were checked (a worker that lost its job?); they are redone",
        hint="the job retries at once; nothing was switched",
    )


def _first_chunk_opens(
    escrow: Escrow, prefix: str, file: DepositFile, generation: int, header: bytes,
    identity: age.Identity,
) -> bool:
    try:
        if escrow.store.get_bytes(prefix + header_key(file.idx, generation)) != header:
            return False
        key = age.unwrap_file_key(header, [identity])
        size = min(age.encrypted_payload_size(file.size), age.NONCE_SIZE + ENCRYPTED_CHUNK_SIZE)
        with escrow.store.open_read(prefix + payload_key(file.idx, generation)) as payload:
            head = payload.read(size)
        final = age.encrypted_payload_size(file.size) == size
        out = bytearray(ENCRYPTED_CHUNK_SIZE)
        age.PayloadDecryptor(key, head[: age.NONCE_SIZE]).decrypt_chunks(
            head[age.NONCE_SIZE :], out, 0, final=final)
    except (age.AgeError, StorageError):
        return False
    return True


def _switch(escrow: Escrow, deposit_id: str, rekey_id: int) -> None:
    """Serve the new objects: every file's header, the identity, the generation, in one
    transaction; the bucket's copies written just before it commits."""
    with escrow.uow() as uow:
        deposit = uow.session.get(Deposit, deposit_id, with_for_update=True)
        rekey = uow.session.get(Rekey, rekey_id)
        assert deposit is not None and rekey is not None
        if rekey.state != "running":
            return  # another worker switched it, or it was ended
        headers = files_done(uow, rekey_id)
        missing = [f.path for f in deposit.files if f.idx not in headers]
        if missing:
            raise Conflict(f"rekey {rekey_id}: {len(missing)} file(s) not re-encrypted "
                           f"({', '.join(missing[:5])})", hint="the job retries")
        for file in deposit.files:
            file.header = headers[file.idx]
        deposit.generation, deposit.wrapped_identity = rekey.generation, rekey.wrapped_identity
        if not rekey.keep_lab_recipients:
            deposit.extra_recipients = "[]"  # the new headers do not open with them
        deposit.recipient, deposit.rekeying_at, deposit.last_verified_at = (
            rekey.recipient, None, now())
        rekey.state = "switched"
        # what fixity saw of the old objects: the new ones are recorded after the mirror copy
        uow.session.execute(delete(StoredObject).where(StoredObject.deposit_id == deposit_id))
        uow.session.flush()
        write_bucket_copies(escrow, uow, deposit)
        copies.lock_deposit(escrow, deposit)
        uow.audit(
            AuditAction.VERSION_REKEYED, SYSTEM, subject(deposit),
            {"rekey": rekey.id, "generation": rekey.generation, "files": len(deposit.files),
             "recipient": rekey.recipient, "reason": rekey.reason},
        )
        uow.commit()


def _clean_up(escrow: Escrow, deposit_id: str) -> tuple[int, int]:
    """Remove every file object of the deposit that does not serve (the old generation, and
    what failed attempts left) from each copy, unless Object Lock retains it; copy the new
    ones to the mirror. (objects deleted, objects left locked) in the primary."""
    with escrow.uow() as uow:
        deposit = copies.load_detached(uow, deposit_id)
    serving = {o.key for o in copies.deposit_objects(deposit)}
    counts = [0, 0]
    for name, store in copies.copies(escrow).items():
        for key in store.list_keys(deposit_prefix(deposit_id) + "files/"):
            if key in serving:
                continue
            until = store.retained_until(key) if isinstance(store, SupportsRetention) else None
            if until is not None and until > now():
                counts[1] += name == copies.PRIMARY
                continue
            store.delete(key)
            counts[0] += name == copies.PRIMARY
    copies.after_seal(escrow, deposit_id, SYSTEM)  # the mirror gets the new objects
    log.info("rekey of %s: %d old object(s) deleted, %d left to their Object Lock date",
             deposit_id, *counts)
    return counts[0], counts[1]
