"""Close-out of ended grants: the researcher attests that the weights were deleted.

A grant ends when it expires or is revoked, unless a renewal continues it (then the renewal's
end is the one that counts). From then on its researcher owes a close-out: a typed full name
under the close-out message (`closeout_message`), and optionally an SSH signature over the same
message (`ssh-keygen -Y sign -n escrow-closeout`) made with one of their proven ssh-ed25519
keys, checked exactly as an NDA's (`ndas.signer_key`, `sshsig.verify`). The typed name stays in
`grant_closeouts` (personal data, as an NDA's typed name); the `grant.closed` event carries
what an NDA signature's does: the person's commitment, the grant, the message's SHA-256 and the
SSH key's id and fingerprint.

A close-out not made `overdue_days` after the grant ended is overdue: reviewers see it in their
organisation's grant listing, and a policy may refuse new grants while one is overdue
(`requires: {no_overdue_closeouts: true}`, decided from `due_closeouts`).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from broker.adapters.db.models import AccessRequest, Grant, GrantCloseout, ResearcherKey, User
from broker.adapters.db.uow import UnitOfWork
from broker.domain import sshsig
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.hosting import WEIGHTS
from broker.domain.principals import Principal
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound
from broker.services import grants as grant_service
from broker.services.ndas import check_typed_name, signer_key
from broker.services.people import audit_subject
from broker.services.views_types import CloseoutStatus, CloseoutView, GrantView

NAMESPACE = sshsig.CLOSEOUT_NAMESPACE
DEFAULT_OVERDUE_DAYS = 14
SIGN_HINT = (
    "sign the close-out message with: ssh-keygen -Y sign -n escrow-closeout -f "
    "~/.ssh/id_ed25519 MESSAGE (escrow grants close --ssh-key does this)"
)


# --- the rules (pure) -------------------------------------------------------------------------


def ended_at(grant: Grant, moment: datetime) -> datetime | None:
    """When the grant ended (revoked, or expired by `moment`), else None."""
    if grant.revoked_at is not None:
        return min(grant.revoked_at, grant.expires_at)
    if moment >= grant.expires_at:
        return grant.expires_at
    return None


def closeout_message(grant: Grant) -> str:
    """The exact text the researcher attests (and signs, with --ssh-key)."""
    deposit = grant.deposit
    return (
        "Close-out of a grant of the weights escrow\n"
        f"grant: {grant.id}\n"
        f"model: {deposit.model.full_name}@{deposit.version}\n"
        f"deposit: {deposit.id}\n"
        f"key: {grant.key_id or 'none (hosted access)'}\n"
        "I attest that I have deleted every copy of these model weights that I obtained under "
        "this grant, encrypted or decrypted, and every copy I gave to anyone else.\n"
    )


# --- closing ----------------------------------------------------------------------------------


def message(uow: UnitOfWork, actor: Principal, grant_id: str) -> CloseoutView:
    """The close-out of one of the actor's grants: its message, and whether it was made."""
    grant = _own(uow, actor, grant_id)
    return describe(uow, grant, uow.session.get(GrantCloseout, grant.id))


def close(
    uow: UnitOfWork,
    actor: Principal,
    grant_id: str,
    attest_deleted: object,
    typed_name: object,
    ssh_signature: object = None,
) -> tuple[CloseoutView, bool]:
    """Record the actor's close-out of an ended grant; (view, created). A second close-out of
    the same grant returns the first, unchanged."""
    grant = _own(uow, actor, grant_id)
    _require_weights_attested(grant, attest_deleted)
    name = check_typed_name(typed_name)
    existing = uow.session.get(GrantCloseout, grant.id)
    if existing is not None:
        return describe(uow, grant, existing), False
    moment = now()
    _require_ended(uow, grant, moment)
    text = closeout_message(grant)
    key, armored = _checked_signature(uow, grant, text, ssh_signature)
    row = GrantCloseout(
        grant_id=grant.id,
        typed_name=name,
        message=text,
        ssh_signature=armored,
        ssh_key_id=key.id if key else None,
        attested_at=moment,
    )
    uow.session.add(row)
    _audit_closed(uow, actor, grant, text, key, moment)
    uow.commit()
    return describe(uow, grant, row), True


def _require_weights_attested(grant: Grant, attest_deleted: object) -> None:
    """A close-out is of a weights grant, and attests the deletion."""
    if grant.kind != WEIGHTS:
        raise Conflict(
            f"grant {grant.id} is of kind {grant.kind}: hosted access released no weights, so "
            "there is nothing to delete and no close-out to make",
            hint="nothing to do: close-outs are for weights grants (escrow grants lists them)",
        )
    if attest_deleted is not True:
        raise InvalidInput(
            "'attest_deleted' must be true: a close-out attests that the weights were deleted",
            hint="delete every copy first, then: escrow grants close GRANT --attest-deleted "
            '--name "Full Name"',
        )


def _require_ended(uow: UnitOfWork, grant: Grant, moment: datetime) -> None:
    """The grant ended by `moment`, and no renewal continues it."""
    if ended_at(grant, moment) is None:
        raise Conflict(
            f"grant {grant.id} has not ended: it is valid until "
            f"{_iso(grant.expires_at)}; a close-out attests deletion after the end",
            hint="close it once it has expired or was revoked; list yours with `escrow grants`",
        )
    continued = _continuation(uow, grant)
    if continued is not None:
        raise Conflict(
            f"grant {grant.id} is continued by grant {continued.id}: the weights are still "
            "yours to hold",
            hint=f"close grant {continued.id} once it ends: escrow grants close {continued.id} "
            '--attest-deleted --name "Full Name"',
        )


def _checked_signature(
    uow: UnitOfWork, grant: Grant, text: str, ssh_signature: object
) -> tuple[ResearcherKey | None, str | None]:
    """The signer's key and the signature re-armored, after checking it over `text` with one of
    the researcher's proven keys; (None, None) where none was given."""
    if ssh_signature is None or ssh_signature == "":
        return None, None
    if not isinstance(ssh_signature, str):
        raise InvalidInput(
            "'ssh_signature' must be the armored text of the .sig file", hint=SIGN_HINT
        )
    parsed = sshsig.parse_armored(ssh_signature)
    key = signer_key(uow, grant.user_id, parsed)
    sshsig.verify(parsed, text.encode("utf-8"), NAMESPACE)
    return key, sshsig.armor(sshsig.encode_blob(parsed))


def _audit_closed(
    uow: UnitOfWork,
    actor: Principal,
    grant: Grant,
    text: str,
    key: ResearcherKey | None,
    moment: datetime,
) -> None:
    """The `grant.closed` event: the person, the grant, the message's SHA-256 and the key."""
    user = uow.session.get(User, grant.user_id)
    assert user is not None  # a foreign key
    details: dict[str, object] = {
        "message_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "ended_at": _iso(ended_at(grant, moment) or moment),
    }
    if key is not None:
        details["ssh_key"] = key.id
        details["ssh_key_fingerprint"] = _fingerprint(key)
    uow.audit(
        AuditAction.GRANT_CLOSED,
        actor,
        {**audit_subject(user), "grant": grant.id, "deposit": grant.deposit_id},
        details,
    )


def describe(uow: UnitOfWork, grant: Grant, row: GrantCloseout | None) -> CloseoutView:
    moment = now()
    end = ended_at(grant, moment)
    key = uow.session.get(ResearcherKey, row.ssh_key_id) if row and row.ssh_key_id else None
    return {
        "grant_id": grant.id,
        "ended_at": _iso(end) if end else None,
        "message": row.message if row else closeout_message(grant),
        "attested_at": _iso(row.attested_at) if row else None,
        "ssh_key": key.id if key else None,
        "ssh_key_fingerprint": _fingerprint(key) if key else None,
        "ssh_signature": row.ssh_signature if row else None,
    }


# --- what reviewers and policies see ----------------------------------------------------------


def with_closeouts(
    uow: UnitOfWork, found: list[Grant], overdue_days: int, moment: datetime | None = None
) -> list[GrantView]:
    """The grants described, each with its close-out status (due, made, overdue)."""
    moment = moment or now()
    ids = [g.id for g in found]
    made = {
        row.grant_id: row
        for row in uow.session.scalars(select(GrantCloseout).where(GrantCloseout.grant_id.in_(ids)))
    } if ids else {}
    continued = _continued_ids(uow, ids)
    result: list[GrantView] = []
    for grant in found:
        view = grant_service.describe(uow, grant, moment)
        view["closeout"] = status(
            grant, made.get(grant.id), grant.id in continued, overdue_days, moment
        )
        result.append(view)
    return result


def status(
    grant: Grant, row: GrantCloseout | None, continued: bool, overdue_days: int, moment: datetime
) -> CloseoutStatus:
    # hosted access (inference, internals) released no weights: nothing to delete, no close-out
    end = None if continued or grant.kind != WEIGHTS else ended_at(grant, moment)
    return {
        "due_since": _iso(end) if end and row is None else None,
        "attested_at": _iso(row.attested_at) if row else None,
        "ssh_signed": bool(row and row.ssh_signature),
        "overdue": bool(
            end is not None and row is None and moment >= end + timedelta(days=overdue_days)
        ),
    }


def due_closeouts(uow: UnitOfWork, user_id: int, moment: datetime) -> tuple[datetime, ...]:
    """When each of the user's ended grants without a close-out ended (continued ones aside):
    the facts of the policy rule `no_overdue_closeouts`, which decides when each is overdue."""
    ended = list(
        uow.session.scalars(
            select(Grant)
            .outerjoin(GrantCloseout, GrantCloseout.grant_id == Grant.id)
            .where(
                Grant.user_id == user_id,
                Grant.kind == WEIGHTS,  # hosted access released no weights to delete
                GrantCloseout.grant_id.is_(None),
                (Grant.revoked_at.is_not(None)) | (Grant.expires_at <= moment),
            )
        )
    )
    continued = _continued_ids(uow, [g.id for g in ended])
    return tuple(
        end
        for grant in ended
        if grant.id not in continued and (end := ended_at(grant, moment)) is not None
    )


# --- helpers ----------------------------------------------------------------------------------


def _own(uow: UnitOfWork, actor: Principal, grant_id: str) -> Grant:
    authorize(actor, Action.GRANT_READ_OWN)  # a person (a token is told so), before any lookup
    grant = uow.session.get(Grant, grant_id)
    if grant is None:
        raise _not_found(grant_id)
    try:
        authorize(actor, Action.GRANT_CLOSE, owner=str(grant.user_id))
    except Forbidden:
        raise _not_found(grant_id) from None  # someone else's grant: as if it did not exist
    return grant


def _continuation(uow: UnitOfWork, grant: Grant) -> Grant | None:
    return uow.session.scalar(
        select(Grant)
        .join(AccessRequest, Grant.request_id == AccessRequest.id)
        .where(AccessRequest.renews_grant_id == grant.id, Grant.revoked_at.is_(None))
    )


def _continued_ids(uow: UnitOfWork, ids: list[str]) -> set[str]:
    """Which of the grants `ids` an unrevoked renewal continues."""
    if not ids:
        return set()
    return {
        str(renewed)
        for renewed in uow.session.scalars(
            select(AccessRequest.renews_grant_id)
            .join(Grant, Grant.request_id == AccessRequest.id)
            .where(AccessRequest.renews_grant_id.in_(ids), Grant.revoked_at.is_(None))
        )
    }


def _fingerprint(key: ResearcherKey) -> str:
    return sshsig.ssh_fingerprint(base64.b64decode(key.recipient.split()[1]))


def _not_found(grant_id: str) -> NotFound:
    return NotFound(
        f"grant {grant_id!r} does not exist or is not yours",
        hint="list your grants with `escrow grants`",
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
