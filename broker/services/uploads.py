"""Abandoned multipart uploads: found, listed, aborted, so their staged parts stop taking space.

An upload is abandoned when nothing has reached it (no part received, not created) for
`older_than`: a depositor who gave up, a client killed for good, a file restarted (its old upload
is aborted at once, but a crash in between leaves it), or a mirror copy cut off by a crash. An
upload still receiving parts is never touched, whatever its deposit's state, so one of an open
deposit is kept while it is recent. An aborted upload of a file still open heals on its own: the
next `escrow deposit` finds the store no longer knows it and starts a new one.

Each abort is one audit event (`deposit.upload_aborted`), in the deposit's trail when the key
names a deposit, written after the store has freed the upload (an abort that fails is reported,
not logged as done). Both stores are swept: the primary and the mirror.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select

from broker.adapters.db.models import Deposit, DepositFile
from broker.adapters.objectstore.base import ObjectStore, PendingUpload
from broker.container import Escrow
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import SYSTEM, Principal
from broker.errors import EscrowError, InvalidInput

log = logging.getLogger(__name__)

DEFAULT_OLDER_THAN = timedelta(days=7)
ABORTED = AuditAction.DEPOSIT_UPLOAD_ABORTED
_PAYLOAD_KEY = re.compile(r"deposits/([^/]+)/files/([0-9]+)\.payload")
_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class AbandonedUpload:
    copy: str  # primary | mirror
    key: str
    upload_id: str
    deposit: str | None  # the deposit the key names, if any
    path: str | None  # the file's path in that deposit, if the database knows it
    deposit_state: str | None
    age_s: int  # since the upload's last activity
    bytes: int
    aborted: bool = False
    error: str = ""  # why the abort failed, if it did

    def describe(self) -> str:
        what = f"deposit {self.deposit} file {self.path or self.key}" if self.deposit else self.key
        return (
            f"{self.copy}: {what}, upload {self.upload_id}, idle {_human(self.age_s)}, "
            f"{self.bytes} bytes"
        )


def parse_age(text: str) -> timedelta:
    """`7d`, `12h`, `30m`, `90s`, `2w` as a duration (the CLI's --older-than)."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise InvalidInput(
            f"age {text!r} is not a number with a unit",
            hint="write e.g. 7d, 12h, 30m, 90s or 2w",
        )
    return timedelta(**{_UNITS[m[2]]: int(m[1])})


def gc_uploads(
    escrow: Escrow,
    older_than: timedelta = DEFAULT_OLDER_THAN,
    dry_run: bool = False,
    actor: Principal = SYSTEM,
) -> list[AbandonedUpload]:
    """Abort every multipart upload idle for `older_than` or more, in the primary store and the
    mirror; with `dry_run`, only list them. Returns what was (or would be) aborted. The worker
    calls this on its schedule; `escrow admin uploads gc` lists, then aborts."""
    found = find_abandoned(escrow, older_than)
    return found if dry_run else abort_uploads(escrow, found, actor)


def find_abandoned(escrow: Escrow, older_than: timedelta) -> list[AbandonedUpload]:
    if older_than < timedelta(0):
        raise InvalidInput("the age must not be negative", hint="e.g. --older-than 7d")
    at = now()
    found: list[AbandonedUpload] = []
    for copy, store in _stores(escrow):
        candidates = [
            u for u in store.list_multipart_uploads("") if at - u.last_activity >= older_than
        ]
        described = [_describe(escrow, copy, upload, at) for upload in candidates]
        found += [u for u in described if u.age_s >= older_than.total_seconds()]
    return found


def abort_uploads(
    escrow: Escrow, uploads: list[AbandonedUpload], actor: Principal = SYSTEM
) -> list[AbandonedUpload]:
    """Abort each upload, then log it; one that fails is returned with its error, not logged."""
    stores = dict(_stores(escrow))
    done = []
    for item in uploads:
        try:
            stores[item.copy].abort_multipart(item.key, item.upload_id)
        except EscrowError as error:
            log.warning("could not abort upload %s of %s: %s", item.upload_id, item.key, error)
            done.append(replace(item, error=error.message))
            continue
        with escrow.uow() as uow:
            subject = {"deposit": item.deposit} if item.deposit else {"object": item.key}
            details: dict[str, object] = {
                "copy": item.copy,
                "key": item.key,
                "upload_id": item.upload_id,
                "idle_s": item.age_s,
                "bytes": item.bytes,
            }
            if item.path:
                details["path"] = item.path
            uow.audit(ABORTED, actor, subject, details)
            uow.commit()
        done.append(replace(item, aborted=True))
    return done


def _stores(escrow: Escrow) -> list[tuple[str, ObjectStore]]:
    stores: list[tuple[str, ObjectStore]] = [("primary", escrow.store)]
    if escrow.mirror is not None:
        stores.append(("mirror", escrow.mirror))
    return stores


def _describe(escrow: Escrow, copy: str, upload: PendingUpload, at: datetime) -> AbandonedUpload:
    deposit_id = path = state = None
    last_activity = upload.last_activity
    m = _PAYLOAD_KEY.fullmatch(upload.key)
    if m:
        deposit_id = m[1]
        with escrow.uow() as uow:
            deposit = uow.session.get(Deposit, deposit_id)
            if deposit is not None:
                state = deposit.state
                # An upload cannot be older than its deposit: a store whose clock is off, or
                # that reports no real initiation time (moto), must not make a new one look
                # abandoned.
                last_activity = max(last_activity, deposit.created_at)
                path = uow.session.scalar(
                    select(DepositFile.path).where(
                        DepositFile.deposit_id == deposit_id, DepositFile.idx == int(m[2])
                    )
                )
    return AbandonedUpload(
        copy=copy,
        key=upload.key,
        upload_id=upload.upload_id,
        deposit=deposit_id,
        path=path,
        deposit_state=state,
        age_s=int((at - last_activity).total_seconds()),
        bytes=upload.size,
    )


def _human(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
