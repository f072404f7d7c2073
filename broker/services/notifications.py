"""Email notifications through a transactional outbox.

A change that deserves a notice (a request waiting for review, a decision, an agreement trigger)
queues it in its own transaction (`uow.notices` set: ESCROW_SMTP_URL is): a rollback queues
nothing, a commit never loses one. The worker finds expiring and expired grants on its schedule
and sends what is due, one message per recipient, each under the SMTP adapter's time limits;
a message the server cannot take now is retried with exponential backoff, and ends `failed`
with its last error after ESCROW_NOTIFY_MAX_ATTEMPTS attempts or on a 5xx refusal. Every
message has a unique dedupe key (notice, subject, recipient): queueing it twice queues it once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from broker.adapters.db.models import (
    AccessRequest,
    Deposit,
    Grant,
    Membership,
    OutboxMessage,
    User,
    UserProfile,
)
from broker.adapters.db.uow import UnitOfWork, rowcount
from broker.adapters.mail import MailRejected, send_mail
from broker.container import Escrow
from broker.domain import notices
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.principals import Principal
from broker.domain.states import RequestState
from broker.errors import Unavailable

log = logging.getLogger(__name__)

QUEUED, SENT, FAILED = "queued", "sent", "failed"
STATES = (QUEUED, SENT, FAILED)
MAX_BACKOFF = timedelta(hours=6)
EXPIRED_LOOKBACK = timedelta(days=7)  # a grant that ended longer ago is not announced late
KEEP_SENT = timedelta(days=30)  # then a sent message (an email address) is dropped
REVIEWER_ROLES = ("reviewer", "admin")


# --- queueing, in the caller's transaction -----------------------------------------------------


def queue(uow: UnitOfWork, notice: notices.Notice, recipients: Iterable[str],
          at: datetime | None = None) -> int:
    """Queue `notice` to each recipient once (a dedupe key already queued is skipped); the
    number of recipients. Nothing when notifications are off."""
    if uow.notices is None:
        return 0
    moment = at or now()
    dialect = postgresql if uow.session.get_bind().dialect.name == "postgresql" else sqlite
    addresses = sorted({r.strip() for r in recipients if r and r.strip()})
    for recipient in addresses:
        statement = dialect.insert(OutboxMessage).values(
            kind=str(notice.kind), recipient=recipient, subject=notice.subject,
            body=notice.body, dedupe_key=dedupe_key(notice, recipient), state=QUEUED,
            attempts=0, run_after=moment, created_at=moment,
        )
        uow.session.execute(statement.on_conflict_do_nothing(index_elements=["dedupe_key"]))
    return len(addresses)


def dedupe_key(notice: notices.Notice, recipient: str) -> str:
    digest = hashlib.sha256(f"{notice.about}\n{recipient.lower()}".encode()).hexdigest()[:24]
    return f"{notice.kind}:{notice.about[:120]}:{digest}"


def _emails(uow: UnitOfWork, user_ids: Iterable[int]) -> list[str]:
    """The verified addresses of these users (not disabled): an unverified address may be
    anyone's, and must not receive what the account sees."""
    ids = set(user_ids)
    if not ids:
        return []
    return list(uow.session.scalars(
        select(UserProfile.email)
        .join(User, User.id == UserProfile.user_id)
        .where(UserProfile.user_id.in_(ids), UserProfile.email_verified.is_(True),
               UserProfile.email.is_not(None), User.disabled_at.is_(None))
    ))


def _members(uow: UnitOfWork, org_id: int, roles: tuple[str, ...]) -> set[int]:
    return set(uow.session.scalars(
        select(Membership.user_id).where(Membership.org_id == org_id, Membership.role.in_(roles))
    ))


def request_waiting(uow: UnitOfWork, request: AccessRequest) -> None:
    """A request waits for review: to the reviewers (and admins) of the lab, not its asker."""
    if uow.notices is None:
        return
    deposit = request.deposit
    reviewers = _members(uow, deposit.model.org_id, REVIEWER_ROLES) - {request.user_id}
    notice = notices.review_waiting(uow.notices, request.id, _version(deposit),
                                    request.purpose, request.renews_grant_id)
    queue(uow, notice, _emails(uow, reviewers))


def request_decided(uow: UnitOfWork, request: AccessRequest, grant: Grant | None) -> None:
    """A reviewer's decision closed the request: to its researcher."""
    if uow.notices is None:
        return
    notice = notices.decision(
        uow.notices, request.id, _version(request.deposit), request.state == RequestState.APPROVED,
        grant.id if grant else None, grant.expires_at if grant else None,
    )
    queue(uow, notice, _emails(uow, [request.user_id]))


def agreement_triggered(uow: UnitOfWork, deposit: Deposit, trigger: str, unlocks: str,
                        released_at: datetime, trustees: Iterable[str]) -> None:
    """A release trigger fired: to the lab's admins and the agreement's trustees."""
    if uow.notices is None:
        return
    notice = notices.agreement_triggered(uow.notices, _version(deposit), trigger, unlocks,
                                         released_at)
    admins = _emails(uow, _members(uow, deposit.model.org_id, ("admin",)))
    queue(uow, notice, [*admins, *trustees])


def _version(deposit: Deposit) -> str:
    return f"{deposit.model.full_name}@{deposit.version}"


def queue_grant_notices(escrow: Escrow, at: datetime | None = None) -> int:
    """The worker's step: queue "expiring soon" (within ESCROW_NOTIFY_EXPIRING_DAYS) and
    "expired" notices for grants not revoked nor continued by a renewal; each once per grant.
    Returns the number of grants looked at."""
    moment = at or now()
    soon = moment + timedelta(days=escrow.settings.notify_expiring_days)
    renewal, renewal_request = aliased(Grant), aliased(AccessRequest)
    renewed = exists().where(
        renewal.request_id == renewal_request.id,
        renewal_request.renews_grant_id == Grant.id,
        renewal.revoked_at.is_(None),
    )
    with escrow.uow() as uow:
        site = uow.notices
        if site is None:
            return 0
        grants = uow.session.scalars(
            select(Grant).where(
                Grant.revoked_at.is_(None), Grant.expires_at <= soon,
                Grant.expires_at > moment - EXPIRED_LOOKBACK, ~renewed,
            ).order_by(Grant.expires_at)
        ).all()
        for grant in grants:
            version = _version(grant.deposit)
            notice = (notices.grant_expired(site, grant.id, version, grant.expires_at)
                      if grant.expires_at <= moment
                      else notices.grant_expiring(site, grant.id, version, grant.expires_at))
            queue(uow, notice, _emails(uow, [grant.user_id]), moment)
        uow.commit()
        return len(grants)


# --- sending, by the worker ------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    id: int
    recipient: str
    subject: str
    body: str
    attempts: int  # counting this one


def send_due(escrow: Escrow, at: datetime | None = None, limit: int = 50) -> int:
    """Send up to `limit` due messages; the number sent. A server that cannot take one now
    ends the pass: the others wait for the next one, untried."""
    smtp = escrow.settings.smtp
    if smtp is None:
        return 0
    sent = 0
    for _ in range(limit):
        claimed = _claim(escrow, at)
        if claimed is None:
            break
        try:
            send_mail(smtp, claimed.recipient, claimed.subject, claimed.body)
        except Unavailable as error:
            _settle(escrow, claimed, error, at)
            if not isinstance(error, MailRejected):
                break
        else:
            _settle(escrow, claimed, None, at)
            sent += 1
    return sent


def _claim(escrow: Escrow, at: datetime | None) -> Claimed | None:
    """Take the oldest due message: its attempt counted and its `run_after` moved past the time
    a send can take, so that no other worker takes it meanwhile (and one whose worker died is
    tried again after). SKIP LOCKED on PostgreSQL; the attempts check holds on SQLite too."""
    assert escrow.settings.smtp is not None
    hold = timedelta(seconds=escrow.settings.smtp.timeout_s * 10 + 60)
    while True:
        with escrow.uow() as uow:
            moment = at or now()
            row = uow.session.scalar(
                select(OutboxMessage)
                .where(OutboxMessage.state == QUEUED, OutboxMessage.run_after <= moment)
                .order_by(OutboxMessage.run_after, OutboxMessage.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if row is None:
                return None
            taken = uow.session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == row.id, OutboxMessage.state == QUEUED,
                       OutboxMessage.attempts == row.attempts)
                .values(attempts=row.attempts + 1, run_after=moment + hold)
                .execution_options(synchronize_session=False)
            )
            uow.commit()
            if rowcount(taken) == 1:
                return Claimed(row.id, row.recipient, row.subject, row.body, row.attempts + 1)


def _settle(escrow: Escrow, claimed: Claimed, error: Unavailable | None,
            at: datetime | None) -> None:
    """Record the attempt's end: sent; or retried later (backoff); or failed for good."""
    settings = escrow.settings
    moment = at or now()
    values: dict[str, object]
    if error is None:
        values = {"state": SENT, "sent_at": moment, "last_error": None}
    elif isinstance(error, MailRejected) or claimed.attempts >= settings.notify_max_attempts:
        values = {"state": FAILED, "last_error": f"{error.message} ({error.hint})"}
    else:
        wait = min(timedelta(seconds=settings.notify_backoff_s) * 2 ** (claimed.attempts - 1),
                   MAX_BACKOFF)
        values = {"run_after": moment + wait, "last_error": f"{error.message} ({error.hint})"}
    if error is not None:
        log.warning("notification %s (attempt %d): %s", claimed.id, claimed.attempts,
                    error.message)
    with escrow.uow() as uow:
        uow.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == claimed.id, OutboxMessage.attempts == claimed.attempts,
                   OutboxMessage.state == QUEUED)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        uow.commit()


def forget_sent(uow: UnitOfWork, at: datetime | None = None) -> int:
    """Drop messages sent more than KEEP_SENT ago (they hold email addresses); the number."""
    cutoff = (at or now()) - KEEP_SENT
    dropped = uow.session.execute(
        delete(OutboxMessage).where(OutboxMessage.state == SENT, OutboxMessage.sent_at < cutoff)
    )
    return rowcount(dropped)


# --- the operator's view ---------------------------------------------------------------------


def outbox(uow: UnitOfWork, actor: Principal, state: str | None = None,
           limit: int = 100) -> list[OutboxMessage]:
    """The newest messages (of one state), newest first."""
    authorize(actor, Action.NOTIFICATIONS_READ)
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if state is not None:
        query = query.where(OutboxMessage.state == state)
    return list(uow.session.scalars(query))
