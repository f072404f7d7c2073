"""The captures of studies of live use (broker.services.studies has the studies and consent).

The /v1 API (and the chat page) asks `capturing` in the same short transaction that routes the
query, so a withdrawn consent or a closed study stops the very next exchange; `capture` checks
again when it records one (a consent withdrawn while an answer streamed stops that one too).
The exchange is encrypted with age to the study's recipients in memory, at once, and only the
age file goes to the store (`studies/<study>/captures/<day>/<capture>.age`); the database holds
its size and SHA-256, the audit log a count per study and day (`report_due`), never content.
The study's team lists and fetches them (`list_captures`, `capture_url`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from broker import age
from broker.adapters.db.models import (
    Deposit,
    Study,
    StudyCapture,
    StudyCaptureReport,
    StudyConsent,
)
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain import studies as domain
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import SYSTEM, Principal
from broker.errors import InvalidInput, NotFound
from broker.services.grants import iso
from broker.services.studies import study_subject, team_study
from broker.services.views_types import StudyCaptureList, StudyCaptureUrl, StudyCaptureView

log = logging.getLogger(__name__)

PAGE = 100  # captures per page, at most
REPORT_GRACE = timedelta(minutes=10)  # a day is counted this long after it ends (late captures)


@dataclass(frozen=True)
class Target:
    """Where one exchange of a consenting person goes: a study and its recipients."""

    study_id: str
    consent_id: str
    recipients: tuple[str, ...]


# --- capture ---------------------------------------------------------------------------------


def capturing(uow: UnitOfWork, user_id: str, deposit_id: str) -> tuple[Target, ...]:
    """The approved studies covering `deposit_id` that person `user_id` consents to now."""
    deposit = uow.session.get(Deposit, deposit_id)
    if deposit is None:
        return ()
    rows = uow.session.execute(
        select(Study.id, Study.recipients, StudyConsent.id)
        .join(StudyConsent, StudyConsent.study_id == Study.id)
        .where(StudyConsent.user_id == int(user_id), StudyConsent.withdrawn_at.is_(None),
               Study.state == domain.APPROVED, Study.model_id == deposit.model_id,
               or_(Study.deposit_id.is_(None), Study.deposit_id == deposit_id))
        .order_by(Study.id)
    ).all()
    return tuple(Target(study_id, consent_id, tuple(json.loads(keys)))
                 for study_id, keys, consent_id in rows)


def capture_all(escrow: Escrow, targets: tuple[Target, ...], *, model: str, endpoint: str,
                request: dict[str, Any], answer: domain.Answer, started_at: datetime) -> None:
    """Capture one exchange for each study in `targets` (`capturing`); a failure is logged
    (the study and the error's type, never content) and does not touch the caller's answer."""
    ended = now()
    for target in targets:
        try:
            capture(escrow, target, model=model, endpoint=endpoint, request=request,
                    answer=answer, started_at=started_at, ended_at=ended)
        except Exception as error:  # the answer is given: a lost capture must not break it
            log.error("study %s: an exchange was not captured (%s)", target.study_id,
                      type(error).__name__)


def capture(escrow: Escrow, target: Target, *, model: str, endpoint: str,
            request: dict[str, Any], answer: domain.Answer, started_at: datetime,
            ended_at: datetime) -> str | None:
    """Encrypt one exchange to the study's recipients and store it: the capture's id, or None
    when the consent was withdrawn (or the study closed) meanwhile."""
    capture_id = "cp_" + secrets.token_hex(8)
    document = domain.exchange(
        study_id=target.study_id, capture_id=capture_id, participant=target.consent_id,
        model=model, endpoint=endpoint, request=request, answer=answer,
        started_at=started_at, ended_at=ended_at)
    sealed = io.BytesIO()
    age.encrypt(io.BytesIO(document), sealed, [age.parse_recipient(r) for r in target.recipients])
    del document
    data = sealed.getvalue()
    key = domain.capture_key(target.study_id, ended_at, capture_id)
    with escrow.uow() as uow:
        if not _still_consenting(uow, target):
            return None
        escrow.store.put_bytes(key, data)
        uow.session.add(StudyCapture(
            id=capture_id, study_id=target.study_id, day=ended_at.date().isoformat(),
            object_key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
            created_at=ended_at))
        try:
            uow.commit()
        except Exception:
            escrow.store.delete(key)  # no object without its index row
            raise
    return capture_id


def _still_consenting(uow: UnitOfWork, target: Target) -> bool:
    return uow.session.execute(
        select(StudyConsent.id).join(Study, Study.id == StudyConsent.study_id)
        .where(StudyConsent.id == target.consent_id, StudyConsent.withdrawn_at.is_(None),
               Study.state == domain.APPROVED)
    ).first() is not None


def report_due(escrow: Escrow, at: datetime | None = None) -> int:
    """One `study.captures` event per study and ended UTC day with captures, not counted yet:
    the number written. A day is claimed by inserting its report row, so two workers never
    count it twice."""
    moment = at or now()
    last_day = ((moment - REPORT_GRACE).date() - timedelta(days=1)).isoformat()
    written = 0
    with escrow.uow() as uow:
        due = uow.session.execute(
            select(StudyCapture.study_id, StudyCapture.day, func.count(),
                   func.sum(StudyCapture.size))
            .outerjoin(StudyCaptureReport, (StudyCaptureReport.study_id == StudyCapture.study_id)
                       & (StudyCaptureReport.day == StudyCapture.day))
            .where(StudyCapture.day <= last_day, StudyCaptureReport.study_id.is_(None))
            .group_by(StudyCapture.study_id, StudyCapture.day)
            .order_by(StudyCapture.day, StudyCapture.study_id)
        ).all()
        for study_id, day, count, size in due:
            dialect = postgresql if uow.session.get_bind().dialect.name == "postgresql" else sqlite
            claimed = uow.session.execute(
                dialect.insert(StudyCaptureReport)
                .values(study_id=study_id, day=day, captures=count, reported_at=moment)
                .on_conflict_do_nothing(index_elements=["study_id", "day"])
                .returning(StudyCaptureReport.study_id)
            ).first()
            if claimed is None:
                continue  # another worker counted it
            study = uow.session.get(Study, study_id)
            assert study is not None  # a foreign key
            uow.audit(AuditAction.STUDY_CAPTURES, SYSTEM, study_subject(study),
                      {"day": day, "captures": count, "bytes": int(size or 0)})
            uow.commit()
            written += 1
    return written


# --- the study team's access to its captures -------------------------------------------------


def list_captures(uow: UnitOfWork, actor: Principal, ref: str, after: str | None = None,
                  limit: int = PAGE) -> StudyCaptureList:
    """The study's captures in order, a page at a time (its team only)."""
    study = team_study(uow, actor, ref)
    limit = max(1, min(limit, PAGE))
    query = select(StudyCapture).where(StudyCapture.study_id == study.id)
    if after:
        last = uow.session.get(StudyCapture, after)
        if last is None or last.study_id != study.id:
            raise InvalidInput(f"'after' {after!r} is no capture of study {study.name}",
                               hint="pass the 'next' of the previous page")
        query = query.where(or_(StudyCapture.created_at > last.created_at,
                                (StudyCapture.created_at == last.created_at)
                                & (StudyCapture.id > last.id)))
    rows = uow.session.scalars(
        query.order_by(StudyCapture.created_at, StudyCapture.id).limit(limit + 1)).all()
    page = list(rows[:limit])
    return {"captures": [_capture_view(c) for c in page],
            "next": page[-1].id if len(rows) > limit else None}


def capture_url(escrow: Escrow, uow: UnitOfWork, actor: Principal, ref: str,
                capture_id: str) -> StudyCaptureUrl:
    """A signed URL of one capture's age file (its team only)."""
    study = team_study(uow, actor, ref)
    found = uow.session.get(StudyCapture, capture_id)
    if found is None or found.study_id != study.id:
        raise NotFound(f"study {study.name} has no capture {capture_id}",
                       hint="escrow study fetch STUDY lists and fetches them all")
    signed = escrow.store.presign_get(found.object_key, escrow.settings.download_url_ttl_s)
    return {"id": found.id, "url": signed.url, "headers": dict(signed.headers),
            "expires_at": iso(signed.expires_at), "size": found.size, "sha256": found.sha256}


def _capture_view(found: StudyCapture) -> StudyCaptureView:
    return {"id": found.id, "study_id": found.study_id, "size": found.size,
            "sha256": found.sha256, "created_at": iso(found.created_at)}

