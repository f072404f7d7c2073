"""Fixity: are the escrowed bytes still there, unchanged, in every copy?

A run looks at every sealed deposit, oldest check first (never checked, then the longest ago):

- the first `limit` deposits in full: every object of every copy is read back. Payloads are
  decrypted and hashed against the manifest, as at sealing; headers and wrapped identities are
  compared with the database (which holds them); manifests are checked against their signature
  and the database's file list. A bad copy is repaired from a good one (or from the database)
  and the repair logged. A full pass sets `last_verified_at`, the public list's "last verified".
- the others by the stores' own checksums: a HEAD of each object in each copy, its size and
  ETag compared with what the last full check (or the sealing) recorded. Any difference, or a
  deposit already marked failed, is checked in full at once.

Reads are charged to a byte-rate budget (`Throttle`). Every deposit's result is an audit event
(`fixity.passed` / `fixity.failed`, and `fixity.repaired` per repaired object); a failure marks
the deposit (`Deposit.failure`), which the operator page lists until a full check passes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from broker.adapters.db.models import AuditEvent, Deposit, SigningKey
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import Principal
from broker.domain.throttle import Throttle
from broker.errors import EscrowError, ObjectMissing
from broker.services import copies, signing
from broker.services.copies import DATABASE
from broker.services.deposits import SEALED
from broker.services.fixity_check import CHECKSUMS, FULL, DepositResult, Repair, check_deposit

COMPLETED = AuditAction.FIXITY_COMPLETED


@dataclass
class FixityReport:
    deposits: list[DepositResult] = field(default_factory=list)
    mirror_copied: list[str] = field(default_factory=list)
    mirror_restored: list[str] = field(default_factory=list)
    mirror_error: str = ""  # syncing audit/ and keys/ failed
    keys_repaired: list[Repair] = field(default_factory=list)  # keys/signing/ from the database
    keys_error: str = ""  # checking keys/signing/ failed
    checkpoint: int = 0  # the audit checkpoint signed (and mirrored) at the end of the run
    bytes_read: int = 0
    slept_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.deposits) and not self.mirror_error and not self.keys_error

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


# --- the plan ----------------------------------------------------------------------------------


def plan(uow: UnitOfWork, limit: int | None) -> list[tuple[str, str]]:
    """(deposit id, method) of every sealed deposit, oldest check first; the first `limit`
    (None: all) in full, the others by checksums."""
    ids = uow.session.scalars(
        select(Deposit.id)
        .where(Deposit.state == SEALED)
        .order_by(Deposit.last_verified_at.asc().nulls_first(), Deposit.sealed_at, Deposit.id)
    ).all()
    return [(d, FULL if limit is None or i < limit else CHECKSUMS) for i, d in enumerate(ids)]


def due(uow: UnitOfWork, interval_s: int) -> bool:
    """Whether the last completed run (on the audit log) ended `interval_s` or more ago."""
    last = uow.session.scalar(
        select(AuditEvent.created_at)
        .where(AuditEvent.action == COMPLETED)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )
    return last is None or now() - last >= timedelta(seconds=interval_s)


class FixityRun:
    """One run, a deposit per `step()` (so the worker can run jobs in between)."""

    def __init__(
        self,
        escrow: Escrow,
        actor: Principal,
        *,
        limit: int | None = None,
        max_bytes_per_s: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        rate = max_bytes_per_s
        if rate is None:
            rate = escrow.settings.fixity_max_bytes_per_s
        self.escrow, self.actor = escrow, actor
        self.throttle = Throttle(rate, clock, sleep)
        self.report = FixityReport()
        with escrow.uow() as uow:
            self._queue = deque(plan(uow, limit))

    def step(self) -> bool:
        """Check the next deposit; whether any is left."""
        if self._queue:
            deposit_id, method = self._queue.popleft()
            self.report.deposits.append(
                check_deposit(self.escrow, deposit_id, method, self.throttle, self.actor)
            )
        return bool(self._queue)

    def finish(self) -> FixityReport:
        """Restore the signing keys from the database, bring the mirror's audit log and keys up
        to date, log the run's summary, then sign and mirror a checkpoint covering it."""
        report = self.report
        try:
            report.keys_repaired = repair_signing_keys(self.escrow)
        except EscrowError as error:
            report.keys_error = error.message
        try:
            synced = copies.sync_prefixes(self.escrow, throttle=self.throttle)
        except EscrowError as error:
            synced, report.mirror_error = copies.Synced(), error.message
        report.mirror_copied, report.mirror_restored = synced.copied, synced.restored
        report.bytes_read, report.slept_s = self.throttle.bytes, round(self.throttle.slept_s, 3)
        with self.escrow.uow() as uow:
            for key in synced.restored:
                restored = {
                    "copy": copies.PRIMARY,
                    "source": copies.MIRROR,
                    "problem": "is missing",
                }
                uow.audit(AuditAction.FIXITY_REPAIRED, self.actor, {"object": key}, restored)
            for repair in report.keys_repaired:
                details = {"copy": repair.copy, "source": repair.source, "problem": repair.problem}
                uow.audit(AuditAction.FIXITY_REPAIRED, self.actor, {"object": repair.key}, details)
            uow.audit(COMPLETED, self.actor, {}, _summary(report))
            uow.commit()
        try:
            report.checkpoint = copies.checkpoint_and_mirror(self.escrow)
        except EscrowError as error:
            report.mirror_error = report.mirror_error or f"checkpoint: {error.message}"
        return report


def repair_signing_keys(escrow: Escrow) -> list[Repair]:
    """Rewrite, in every copy, each `keys/signing/` object that is missing or differs from the
    database's signing keys (the database holds them whole: public key, wrapped private key),
    so that a recovery from the bucket finds the keys every client pinned."""
    with escrow.uow() as uow:
        documents = {
            signing.key_object(key): signing.key_document(key)
            for key in uow.session.scalars(select(SigningKey))
        }
    repairs = []
    for copy, store in copies.copies(escrow).items():
        for key, document in sorted(documents.items()):
            try:
                stored: bytes | None = store.get_bytes(key)
            except ObjectMissing:
                stored = None
            if stored == document:
                continue
            store.put_bytes(key, document)
            problem = "is missing" if stored is None else "differs from the database"
            repairs.append(Repair("signing key", key, copy, DATABASE, problem))
    return repairs


def run_fixity(
    escrow: Escrow,
    actor: Principal,
    *,
    limit: int | None = None,
    max_bytes_per_s: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] = time.sleep,
) -> FixityReport:
    """A whole run (`escrow fixity run`)."""
    run = FixityRun(
        escrow, actor, limit=limit, max_bytes_per_s=max_bytes_per_s, clock=clock, sleep=sleep
    )
    while run.step():
        pass
    return run.finish()


def _summary(report: FixityReport) -> dict[str, Any]:
    return {
        "deposits": len(report.deposits),
        "full": sum(1 for d in report.deposits if d.method == FULL),
        "checksums": sum(1 for d in report.deposits if d.method == CHECKSUMS),
        "failed": [d.deposit_id for d in report.deposits if not d.ok],
        "repaired": sum(len(d.repairs) for d in report.deposits)
        + len(report.mirror_restored)
        + len(report.keys_repaired),
        "mirror_copied": len(report.mirror_copied),
        **({"mirror_error": report.mirror_error} if report.mirror_error else {}),
        **({"keys_error": report.keys_error} if report.keys_error else {}),
        "bytes_read": report.bytes_read,
        "slept_s": report.slept_s,
    }


# --- in the worker -----------------------------------------------------------------------------


class FixitySchedule:
    """Fixity in the worker: a run starts when ESCROW_FIXITY_INTERVAL_S has passed since the
    last completed one (read from the audit log, so a restart does not reset the clock) and
    checks one deposit per `step()`, so that verification jobs never wait for a whole run."""

    LOOK_EVERY_S = 60.0  # how often to ask the database whether a run is due

    def __init__(
        self,
        escrow: Escrow,
        actor: Principal,
        sleep: Callable[[float], Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.escrow, self.actor, self._sleep, self._clock = escrow, actor, sleep, clock
        self.run: FixityRun | None = None
        self._next_look = 0.0

    def step(self) -> bool:
        """Do a bit of fixity if some is due; whether anything was done."""
        settings = self.escrow.settings
        if self.run is None:
            if not settings.fixity_interval_s or self._clock() < self._next_look:
                return False
            self._next_look = self._clock() + self.LOOK_EVERY_S
            with self.escrow.uow() as uow:
                if not due(uow, settings.fixity_interval_s):
                    return False
            self.run = FixityRun(
                self.escrow, self.actor, limit=settings.fixity_limit or None, sleep=self._sleep
            )
        if not self.run.step():
            self.run.finish()
            self.run = None
        return True
