"""Verification: stream each payload from the store, decrypt, and check size and SHA-256.

Runs in `escrow worker` (or `escrow verify`), never inside an HTTP request. Plaintext only
ever exists in memory, one chunk at a time, on its way to the hash.

A finalised deposit is verified by one job per file (`verify_file`), so that several workers
split it; the job that records the deposit's last file decides the deposit (seal or fail),
under the deposit's row lock. `run_verification` checks every file in one go: the operator's
`escrow verify`, and jobs queued before per-file jobs existed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from sqlalchemy import func, select, update

from broker import age
from broker.adapters.db.models import Deposit, Job
from broker.adapters.db.uow import UnitOfWork
from broker.auditlog.leaf import canonical_json
from broker.container import Escrow
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import SYSTEM, Principal
from broker.domain.states import FileState
from broker.errors import EscrowError, NotFound, ObjectMissing
from broker.services import copies, signing
from broker.services.deposits import (
    FAILED,
    SEALED,
    VERIFYING,
    deposit_identity,
    deposit_prefix,
    header_key,
    payload_key,
)


class Cancelled(EscrowError):
    """The verification was stopped before its result was written (shutdown, lost lease)."""

    status = 503
    title = "verification interrupted"


@dataclass
class FileResult:
    path: str
    ok: bool
    problem: str = ""


@dataclass
class Report:
    deposit_id: str
    files: list[FileResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.files) and all(f.ok for f in self.files)

    @property
    def bad(self) -> list[FileResult]:
        return [f for f in self.files if not f.ok]


def check_deposit(
    escrow: Escrow, deposit: Deposit, cancelled: Callable[[], bool] | None = None
) -> Report:
    """Decrypt and hash every file of the deposit against what was declared. A file that is
    missing or does not match is a finding; a store that fails is an error (raised): the
    verification could not run, and says nothing about the deposit."""
    identity = deposit_identity(escrow, deposit)
    prefix = deposit_prefix(deposit.id)
    report = Report(deposit.id)
    for file in sorted(deposit.files, key=lambda f: f.path):
        try:
            problem = _check_file(
                escrow, prefix, (file.idx, deposit.generation), file.size, file.sha256 or "",
                identity, cancelled,
            )
        except ObjectMissing as error:
            problem = error.message
        report.files.append(FileResult(file.path, not problem, problem))
    return report


def _check_file(
    escrow: Escrow,
    prefix: str,
    at: tuple[int, int],
    size: int,
    sha256: str,
    identity: age.Identity,
    cancelled: Callable[[], bool] | None,
) -> str:
    """`at`: the file's number and the generation of its objects (deposits.header_key)."""
    header = escrow.store.get_bytes(prefix + header_key(*at))
    try:
        file_key = age.unwrap_file_key(header, [identity])
    except age.AgeError as error:
        return f"header does not open: {error}"
    with escrow.store.open_read(prefix + payload_key(*at)) as payload:
        return check_payload(payload, file_key, size, sha256, cancelled)


def check_payload(
    payload: BinaryIO,
    file_key: bytes,
    size: int,
    sha256: str,
    cancelled: Callable[[], bool] | None = None,
) -> str:
    """Decrypt a payload stream and compare its plaintext's size and SHA-256 with what was
    declared: "" if they match, else the problem. Memory: one batch of chunks."""
    hasher = _HashAside()
    sink = _CountingSink(cancelled or (lambda: False))
    try:
        age.decrypt_payload(payload, sink, file_key, plaintext_hash=hasher)
    except age.AgeError as error:
        return f"payload does not decrypt after {sink.size} bytes: {error}"
    finally:
        hasher.close()
    seen = sink.size
    digest = hasher.hexdigest()
    if seen != size:
        return f"size is {seen} bytes, expected {size}"
    if digest != sha256:
        return f"SHA-256 is {digest}, expected {sha256}"
    return ""


class _HashAside:
    """SHA-256 on a thread of its own, so that one batch is hashed while the next decrypts:
    the hash is the slower half (~1.3-2 GB/s per core, ChaCha20-Poly1305 ~3-4), and both let
    go of the GIL. The decryptor reuses its buffer, so each batch is copied first (~0.1 s per
    GiB); two copies alternate, the older one waited for before it is reused."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sha256")
        self._copies = [bytearray(), bytearray()]
        self._hashing: list[Future[None] | None] = [None, None]
        self._turn = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        turn, self._turn = self._turn, self._turn ^ 1
        self._wait(turn)
        view = memoryview(data).cast("B")
        if len(self._copies[turn]) < len(view):
            self._copies[turn] = bytearray(len(view))
        copy = memoryview(self._copies[turn])[: len(view)]
        copy[:] = view
        self._hashing[turn] = self._thread.submit(self._hash.update, copy)

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        """Wait for the batches handed over (raising what hashing raised); stop the thread."""
        try:
            for turn in (self._turn, self._turn ^ 1):  # the older first: the order they ran
                self._wait(turn)
        finally:
            self._thread.shutdown()

    def _wait(self, turn: int) -> None:
        hashing, self._hashing[turn] = self._hashing[turn], None
        if hashing is not None:
            hashing.result()


class _CountingSink:
    """Where verified plaintext goes: nowhere. Only its size is kept."""

    def __init__(self, cancelled: Callable[[], bool]) -> None:
        self.size = 0
        self.cancelled = cancelled

    def write(self, data: bytes | memoryview) -> int:
        if self.cancelled():
            raise Cancelled(f"verification stopped after {self.size} bytes of a file")
        self.size += len(data)
        return len(data)


def manifest_of(deposit: Deposit) -> dict[str, object]:
    """What the bucket's manifest.json says; `generation` only after a rekey (the manifests
    written before rekeys existed keep their bytes)."""
    made: dict[str, object] = {
        "format": "weights-escrow.manifest.v1",
        "deposit_id": deposit.id,
        "model": deposit.model.full_name,
        "version": deposit.version,
        "depositor": {"org": deposit.model.organisation.name, "token": deposit.created_by},
        "created": deposit.created_at.isoformat(),
        "recipient": deposit.recipient,
        "recipient_type": deposit.recipient_type,
        "classical": deposit.classical,
        "extra_recipients": json.loads(deposit.extra_recipients),
        "files": [
            {
                "path": f.path,
                "size": f.size,
                "sha256": f.sha256,
                "header": header_key(f.idx, deposit.generation),
                "payload": payload_key(f.idx, deposit.generation),
            }
            for f in sorted(deposit.files, key=lambda f: f.path)
        ],
    }
    if deposit.generation:
        made["generation"] = deposit.generation
    return made


OPEN_JOB_STATES = ("queued", "running")
RETRY_HINT = "fix the cause named here, then run `escrow verify {deposit}` to verify it again"


def verify_file(
    escrow: Escrow,
    deposit_id: str,
    index: int,
    actor: Principal,
    *,
    cancelled: Callable[[], bool] | None = None,
    settle: Callable[[UnitOfWork], None] | None = None,
) -> FileResult:
    """Verify one file of a verifying deposit and record its result; the job that records the
    deposit's last file decides the deposit.

    The payload streams outside any transaction. The result is written in one transaction that
    locks the deposit, after `settle` (the job's end; it raises if the job is no longer ours,
    and then nothing is written): the finishers of a deposit's files take that lock one after
    the other, so exactly one of them sees no job of the deposit still open, and decides.
    """
    with escrow.uow() as uow:
        snapshot = copies.load_detached(uow, deposit_id)
    file = next((f for f in snapshot.files if f.idx == index), None)
    if file is None:
        raise NotFound(f"deposit {deposit_id} has no file {index}")
    identity = deposit_identity(escrow, snapshot)
    try:
        problem = _check_file(
            escrow, deposit_prefix(deposit_id), (index, snapshot.generation), file.size,
            file.sha256 or "", identity, cancelled,
        )
    except ObjectMissing as error:
        problem = error.message
    if cancelled is not None and cancelled():
        raise Cancelled("verification stopped before its result was written")
    result = FileResult(file.path, not problem, problem)
    with escrow.uow() as uow:
        deposit = uow.session.get(Deposit, deposit_id, with_for_update=True)
        assert deposit is not None  # deposits are never deleted
        if settle is not None:
            settle(uow)
        sealing = False
        if deposit.state == VERIFYING:  # else the operator's `escrow verify` decided it already
            row = next(f for f in deposit.files if f.idx == index)
            verdict = (FileState.VERIFIED, None) if result.ok else (FileState.FAILED, problem)
            row.state, row.error = verdict
            uow.session.flush()
            if open_jobs(uow, deposit_id) == 0:
                sealing = _decide(escrow, uow, deposit, actor)
        uow.commit()
    if sealing:
        copies.after_seal(escrow, deposit_id, actor)
    return result


def open_jobs(uow: UnitOfWork, deposit_id: str) -> int:
    """How many of the deposit's jobs are queued or running (in this transaction's view)."""
    return uow.session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.deposit_id == deposit_id, Job.state.in_(OPEN_JOB_STATES))
    ) or 0


def _decide(escrow: Escrow, uow: UnitOfWork, deposit: Deposit, actor: Principal) -> bool:
    """The deposit's last file is recorded: seal it if every file verified, else fail it, as
    one verification of the whole deposit would (the same texts, events and seal)."""
    files = sorted(deposit.files, key=lambda f: f.path)
    unchecked = [f.path for f in files if f.state not in (FileState.VERIFIED, FileState.FAILED)]
    if unchecked:  # a file with no job of its own: say so, and let the operator retry
        fail_deposit(uow, deposit.id, "verification could not run: no result for "
                     f"{len(unchecked)} file(s) ({', '.join(unchecked[:5])})")
        return False
    report = Report(deposit.id, [FileResult(f.path, f.state != FAILED, f.error or "")
                                 for f in files])
    return _record(escrow, uow, deposit, report, actor)


def fail_deposit(
    uow: UnitOfWork, deposit_id: str, reason: str, hint: str = "", job_id: int | None = None
) -> None:
    """A deposit whose verification gave up (job `job_id`, if any) must not stay 'verifying'
    forever: it fails, saying why and what to do (the error's own hint first, then how to
    retry), and its other jobs still open end with it: their workers lose their leases and
    stop at their next heartbeat. The caller has locked the deposit."""
    deposit = uow.session.get(Deposit, deposit_id)
    if deposit is None or deposit.state != VERIFYING:
        return
    deposit.state, deposit.failure = FAILED, reason
    for file in deposit.files:
        if file.state == FileState.VERIFIED:  # by its own job: the deposit is not, sealed nothing
            file.state = FileState.UPLOADED
    retry = RETRY_HINT.format(deposit=deposit_id)
    deposit.failure_hint = f"{hint.rstrip('.')}; then {retry}" if hint else retry
    others = update(Job).where(Job.deposit_id == deposit_id, Job.state.in_(OPEN_JOB_STATES))
    if job_id is not None:
        others = others.where(Job.id != job_id)
    uow.session.execute(
        others.values(
            state=FAILED,
            error=f"not run: the deposit failed ({reason})",
            locked_by=None,
            lease_until=None,
            finished_at=now(),
        )
        .execution_options(synchronize_session=False)
    )
    uow.audit(
        AuditAction.DEPOSIT_VERIFICATION_FAILED, SYSTEM, {"deposit": deposit_id}, {"reason": reason}
    )


def run_verification(
    escrow: Escrow,
    deposit_id: str,
    actor: Principal,
    *,
    cancelled: Callable[[], bool] | None = None,
    settle: Callable[[UnitOfWork], None] | None = None,
) -> Report:
    """Verify a deposit and record the outcome: seal it, fail it, or (if sealed) re-check it.

    The payloads stream outside any transaction (a verification of terabytes must not hold
    one open); the outcome is written in one transaction that locks the deposit, together with
    whatever `settle` writes there (the job's end). A deposit that failed because its
    verification could not run (no file found bad) is verified again and sealed if it passes.
    """
    with escrow.uow() as uow:
        snapshot = copies.load_detached(uow, deposit_id)
    report = check_deposit(escrow, snapshot, cancelled)
    if cancelled is not None and cancelled():
        raise Cancelled("verification stopped before its result was written")
    with escrow.uow() as uow:
        deposit = uow.session.get(Deposit, deposit_id, with_for_update=True)
        assert deposit is not None  # deposits are never deleted
        if deposit.state == FAILED and not any(f.state == FileState.FAILED for f in deposit.files):
            deposit.state = VERIFYING  # it failed to run, not to match: try again
        sealing = _record(escrow, uow, deposit, report, actor)
        if settle is not None:
            settle(uow)
        uow.commit()
    if sealing:
        copies.after_seal(escrow, deposit_id, actor)
    return report


def _record(
    escrow: Escrow, uow: UnitOfWork, deposit: Deposit, report: Report, actor: Principal
) -> bool:
    """Write a verification's outcome on the deposit; whether it sealed it."""
    subject = {"deposit": deposit.id, "model": deposit.model.full_name, "version": deposit.version}
    results = [{"path": f.path, "ok": f.ok, "problem": f.problem} for f in report.files]
    if not report.ok:
        for file in deposit.files:
            bad = next((r for r in report.bad if r.path == file.path), None)
            file.error = bad.problem if bad else None
            if bad and deposit.state == VERIFYING:
                file.state = FileState.FAILED
            elif deposit.state == VERIFYING:
                file.state = FileState.UPLOADED  # verified by its own job, but nothing is sealed
        deposit.failure = "; ".join(f"{f.path}: {f.problem}" for f in report.bad)
        deposit.failure_hint = None
        if deposit.state == VERIFYING:
            deposit.state = FAILED
            deposit.failure_hint = (
                "the files stored are not what was declared: deposit this version again "
                "from the original files (a failed deposit is never sealed)"
            )
        uow.audit(AuditAction.DEPOSIT_VERIFICATION_FAILED, actor, subject, {"files": results})
        return False
    deposit.last_verified_at = now()
    deposit.failure = deposit.failure_hint = None
    for file in deposit.files:
        file.state, file.error = FileState.VERIFIED, None
    sealing = deposit.state == VERIFYING
    if sealing:
        _seal(escrow, uow, deposit, actor, subject)
    uow.audit(AuditAction.DEPOSIT_VERIFICATION_PASSED, actor, subject, {"files": len(results)})
    return sealing


def _seal(
    escrow: Escrow, uow: UnitOfWork, deposit: Deposit, actor: Principal, subject: dict
) -> None:
    manifest = canonical_json(manifest_of(deposit))
    key_id, signature = signing.sign(uow, escrow.custody, "manifest", manifest)
    prefix = deposit_prefix(deposit.id)
    escrow.store.put_bytes(prefix + "manifest.json", manifest)
    escrow.store.put_bytes(
        prefix + "manifest.sig",
        canonical_json({"algorithm": "ed25519", "key_id": key_id, "signature": _b64(signature)}),
    )
    copies.lock_deposit(escrow, deposit)  # before the seal commits: no lock, no seal
    deposit.state, deposit.sealed_at = SEALED, now()
    uow.audit(
        AuditAction.DEPOSIT_SEALED,
        actor,
        subject,
        {"manifest_sha256": hashlib.sha256(manifest).hexdigest(), "key_id": key_id},
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
