"""Key releases under a grant, and the signed manifest its researcher verifies.

A key release re-wraps one file's key for the pinned recipient: the broker unwraps the deposit's
escrow identity through key custody, opens the file's escrow header (read from the database, not
the object store) and writes a fresh age header to the researcher's key; the payload does not
change, so `header + payload` decrypts with the researcher's identity. Each release is a
`KeyRelease` row and a `key.released` audit event; each refusal (revoked, not yet valid,
expired, limit reached, not the grant's researcher) is committed as a `key.release_refused`
event before the error is raised. The audit append is the last step before commit, so the log's
lock is held as briefly as possible.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Integer, Row, String, Table, and_, bindparam, func, insert, select

from broker import age
from broker.adapters.db.models import (
    Deposit,
    DepositFile,
    Grant,
    KeyRelease,
    Model,
    Organisation,
    ResearcherKey,
    User,
    UserProfile,
    UTCDateTime,
)
from broker.adapters.db.uow import UnitOfWork, with_audit_head
from broker.adapters.objectstore.base import PresignedRequest
from broker.container import Escrow
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.hosting import release_refusal
from broker.domain.parts import payload_size
from broker.domain.principals import Principal
from broker.errors import Forbidden, NotFound, StorageError
from broker.services.deposits import deposit_prefix, payload_key, unwrap_identity
from broker.services.grants import GrantTerms, iso, not_found, refusal, url_ttl
from broker.services.people import commitment, person_subject
from broker.services.quarantine import RELEASE_HINT as QUARANTINE_HINT
from broker.services.quarantine import refusal as quarantine_refusal
from broker.services.rekey import REKEY_HINT
from broker.services.rekey import refusal as rekey_refusal
from broker.services.views_types import ReleasedKey, SignedManifest


class ReleaseRefused(Forbidden):
    """The grant does not allow this key release now; the refusal is on the audit log."""

    title = "key release refused"


# --- the manifest -----------------------------------------------------------------------------


def manifest(escrow: Escrow, uow: UnitOfWork, actor: Principal, grant_id: str) -> SignedManifest:
    """The deposit's signed manifest, as stored, for the grant's researcher to verify."""
    grant = _own_grant(uow, actor, grant_id)
    why = refusal(grant, now())
    if why is not None:
        raise ReleaseRefused(why[1], hint=_refusal_hint(why[0], grant))
    prefix = deposit_prefix(grant.deposit_id)
    text = escrow.store.get_bytes(prefix + "manifest.json")
    signature = json.loads(escrow.store.get_bytes(prefix + "manifest.sig"))
    return {
        "grant_id": grant.id,
        "deposit_id": grant.deposit_id,
        "manifest": text.decode("utf-8"),
        "signature": signature,
    }


# --- releasing a key --------------------------------------------------------------------------


def release_key(
    escrow: Escrow, uow: UnitOfWork, actor: Principal, grant_id: str, index: int
) -> ReleasedKey:
    """A fresh age header of file `index` for the grant's pinned key, and a short-lived URL of
    the unchanged payload. Refusals are committed to the audit log, then raised.

    The work (checks, unwrap, re-wrap, URL) happens first; the grant's row lock is taken only
    for the final re-check and the writes, so releases of one grant overlap. The hottest call
    of the broker, in plain rows (no ORM objects): two reads, the grant and audit head locked
    together, the numbered release row, then the event (tests/access/test_grants.py counts the
    statements)."""
    authorize(actor, Action.GRANT_RELEASE)
    target = _release_target(uow, grant_id, index)
    _check_release(uow, actor, target, index, now())
    if target.header is None:
        raise NotFound(
            f"the deposit of grant {target.id} has no file number {index}",
            hint="the grant's files are listed by GET /api/v1/grants (escrow grants --json)",
        )
    _require_payload(escrow, target, index)
    header = _rewrapped_header(escrow, target)
    header_sha256 = hashlib.sha256(header).hexdigest()
    moment = now()
    url = escrow.store.presign_get(
        deposit_prefix(target.deposit_id) + payload_key(index, target.generation),
        url_ttl(target, moment, escrow.settings.download_url_ttl_s),
    )
    researcher = person_subject(
        target.user_id,
        commitment(target.issuer, target.subject, target.email, target.commitment_salt),
    )
    # From here to commit, this grant's releases and every audit append queue: revoked or
    # expired meanwhile?
    locked = _locked_for_release(uow, grant_id)
    _check_release(uow, actor, locked, index, moment)
    number = _record_release(uow, actor, locked, index, target.path, header_sha256, moment)
    uow.audit(  # to the head locked with the grant
        AuditAction.KEY_RELEASED,
        actor,
        {
            **researcher,
            "grant": grant_id,
            "deposit": target.deposit_id,
            "model": f"{target.org}/{target.model_name}",
            "version": target.version,
            "file": index,
        },
        {"header_sha256": header_sha256, "key": target.key_id, "release": number},
    )
    uow.commit()
    return _released_key(target, locked, index, number, header, header_sha256, url)


def _rewrapped_header(escrow: Escrow, target: Row[Any]) -> bytes:
    """The file's escrow header re-wrapped for the grant's pinned recipient.

    Why unwrap per release: the deposit identity exists in memory only while one header is
    re-wrapped; with KMS custody every unwrap is on the cloud's own trail, to reconcile."""
    identity = unwrap_identity(escrow, target.deposit_id, target.wrapped_identity)
    return age.rewrap(target.header, [identity], [age.parse_recipient(target.recipient)])


def _released_key(
    target: Row[Any],
    locked: Row[Any],
    index: int,
    number: int,
    header: bytes,
    header_sha256: str,
    url: PresignedRequest,
) -> ReleasedKey:
    """What the researcher receives: the header, the payload's URL, and what is left."""
    return {
        "grant_id": target.id,
        "deposit_id": target.deposit_id,
        "index": index,
        "path": target.path,
        "size": target.size,
        "payload_size": payload_size(target.size),
        "sha256": target.sha256,
        "header": base64.b64encode(header).decode(),
        "header_sha256": header_sha256,
        "payload_url": url.url,
        "payload_url_headers": url.headers,
        "payload_url_expires_at": iso(url.expires_at),
        "releases_left": locked.releases_per_file - number,
        "grant_expires_at": iso(locked.expires_at),
    }


def _require_payload(escrow: Escrow, target: Row[Any], index: int) -> None:
    """The payload must be downloadable before a release counts: a HEAD of it, whole.

    Why check first rather than count and hope: a release counts against the per-file limit and
    the researcher's URL is useless while the store is down; a count that cannot be served would
    leave them short of keys for good. The HEAD costs one store round trip per release; an
    outage that begins between it and the download is not caught (the URL lives 15 minutes, so
    the researcher can still fetch once the store is back)."""
    key = deposit_prefix(target.deposit_id) + payload_key(index, target.generation)
    try:
        found = escrow.store.head(key)
    except StorageError as error:
        raise StorageError(
            f"the object store is unavailable; nothing was counted; retry ({error.message})",
            hint="retry in a minute: the key release was not counted against the grant's "
            "limit; if it persists, the operator should check the object store",
        ) from None
    expected = payload_size(target.size)
    if found is None or found.size != expected:
        what = "missing" if found is None else f"{found.size} bytes, expected {expected}"
        raise StorageError(
            f"the payload of {target.path!r} is {what} in the object store, so it cannot be "
            "downloaded; nothing was counted",
            hint="tell the operator: `escrow fixity run` repairs it from the mirror; then retry",
        )


def _check_release(
    uow: UnitOfWork, actor: Principal, grant: Row[Any], index: int, moment: datetime
) -> None:
    """Refuse (on the log) a caller who is not the holder, a grant not valid now, a retired key."""
    if str(grant.user_id) != actor.id:
        _refuse(uow, actor, grant, index, "not_holder", "not the grant's researcher")
        raise not_found(grant.id)
    why = (
        release_refusal(grant.kind)
        or refusal(grant, moment)
        or _key_refusal(grant)
        or quarantine_refusal(grant.id, grant.quarantined_at, grant.quarantine_reason)
        or rekey_refusal(grant.id, grant.rekeying_at)
    )
    if why is not None:
        _refuse(uow, actor, grant, index, *why)
        raise ReleaseRefused(why[1], hint=_refusal_hint(why[0], grant))


def _record_release(
    uow: UnitOfWork,
    actor: Principal,
    grant: Row[Any],
    index: int,
    path: str,
    header_sha256: str,
    moment: datetime,
) -> int:
    """The release row, numbered after the file's earlier releases under this grant; refused
    (on the log) once the file's key was released as often as the policy allows."""
    limit = grant.releases_per_file
    number = uow.rows(
        _INSERT_RELEASE,
        {"grant_id": grant.id, "file_idx": index, "header_sha256": header_sha256,
         "created_at": moment, "limit": limit},
    ).scalar()
    if number is not None:
        return int(number)
    words = (
        f"the key of {path!r} was released {limit} times under grant {grant.id}, "
        f"the most its policy allows ({limit})"
    )
    _refuse(uow, actor, grant, index, "limit_reached", words)
    raise ReleaseRefused(
        words,
        hint="keep the header you received: it decrypts the payload for as long as you "
        "hold your key; a reviewer may grant a new request",
    )


# What a release needs, as plain rows: built once, compiled once (SQLAlchemy caches by shape).
_GRANT_TERMS = (
    Grant.id,
    Grant.user_id,
    Grant.deposit_id,
    Grant.key_id,
    Grant.not_before,
    Grant.expires_at,
    Grant.revoked_at,
    Grant.releases_per_file,
    Grant.kind,
    # The pinned key: NULL columns when its row is gone (then it counts as retired).
    ResearcherKey.id.label("key_found"),
    ResearcherKey.retired_at.label("key_retired_at"),
    # the version's quarantine (broker.services.quarantine): no release while it is set
    Deposit.quarantined_at,
    Deposit.quarantine_reason,
    # a rekey running (broker.services.rekey): no release until the new objects serve
    Deposit.rekeying_at,
    Deposit.generation,
)
_RELEASE_TARGET = (
    select(
        *_GRANT_TERMS,
        Grant.recipient,
        User.issuer,
        User.subject,
        UserProfile.email,
        UserProfile.commitment_salt,
        Deposit.version,
        Deposit.wrapped_identity,
        Organisation.name.label("org"),
        Model.name.label("model_name"),
        # NULL columns when the deposit has no file number `index`.
        DepositFile.path,
        DepositFile.size,
        DepositFile.sha256,
        DepositFile.header,
    )
    .join(User, User.id == Grant.user_id)
    .outerjoin(UserProfile, UserProfile.user_id == User.id)
    .outerjoin(ResearcherKey, ResearcherKey.id == Grant.key_id)
    .join(Deposit, Deposit.id == Grant.deposit_id)
    .join(Model, Model.id == Deposit.model_id)
    .join(Organisation, Organisation.id == Model.org_id)
    .outerjoin(
        DepositFile,
        and_(DepositFile.deposit_id == Grant.deposit_id, DepositFile.idx == bindparam("index")),
    )
    .where(Grant.id == bindparam("grant_id"))
)
_LOCKED_FOR_RELEASE = with_audit_head(
    select(*_GRANT_TERMS)
    .outerjoin(ResearcherKey, ResearcherKey.id == Grant.key_id)
    .join(Deposit, Deposit.id == Grant.deposit_id)
    .where(Grant.id == bindparam("grant_id")),
    Grant,
)
# The file's next release number, or no row at all once the limit is reached: one statement,
# run after the grant's lock, so it sees every release committed before it.
_EARLIER = (
    select(func.coalesce(func.max(KeyRelease.number), 0).label("last"))
    .where(
        KeyRelease.grant_id == bindparam("grant_id"), KeyRelease.file_idx == bindparam("file_idx")
    )
    .subquery("earlier")
)
_INSERT_RELEASE = (
    insert(cast(Table, KeyRelease.__table__))  # a mapped class's __table__ is a Table
    .from_select(
        ["grant_id", "file_idx", "header_sha256", "created_at", "number"],
        select(
            bindparam("grant_id", type_=String),
            bindparam("file_idx", type_=Integer),
            bindparam("header_sha256", type_=String),
            bindparam("created_at", type_=UTCDateTime),
            _EARLIER.c.last + 1,
        ).where(_EARLIER.c.last < bindparam("limit", type_=Integer)),
    )
    .returning(KeyRelease.number)
)


def _release_target(uow: UnitOfWork, grant_id: str, index: int) -> Row[Any]:
    """The grant, its holder, pinned key, deposit, model and file `index`, in one query."""
    found = uow.rows(
        _RELEASE_TARGET, {"grant_id": grant_id, "index": index}
    ).first()
    if found is None:
        raise not_found(grant_id)
    return found


def _locked_for_release(uow: UnitOfWork, grant_id: str) -> Row[Any]:
    """The grant as committed now, its row locked until commit: releases and revocation of one
    grant serialise, and the release number taken afterwards counts every earlier release.
    The audit head is locked in the same round trip, after the grant, as every change that
    appends locks its own rows first. That holds the head over one more statement (the release
    row) than locking it at the append would, and saves a round trip of every release."""
    found = uow.locked_with_audit_head(_LOCKED_FOR_RELEASE, {"grant_id": grant_id})
    if found is None:
        raise not_found(grant_id)
    return found


def _refuse(
    uow: UnitOfWork, actor: Principal, grant: GrantTerms, index: int, reason: str, words: str
) -> None:
    """Commit the refusal to the audit log (the caller raises afterwards)."""
    uow.audit(
        AuditAction.KEY_RELEASE_REFUSED,
        actor,
        {"grant": grant.id, "deposit": grant.deposit_id, "file": index},
        {"reason": reason, "detail": words},
    )
    uow.commit()


def _key_refusal(grant: Row[Any]) -> tuple[str, str] | None:
    """A key the researcher retired (lost, leaked) receives nothing more, even under a grant.
    (A grant pinned to no key, of hosted access, is refused by its kind before this.)"""
    if grant.key_id is None:
        return "no_key", f"grant {grant.id} is pinned to no key: nothing is released under it"
    if grant.key_found is None or grant.key_retired_at is not None:
        return "key_retired", f"the key {grant.key_id} this grant was issued to has been retired"
    return None


def _refusal_hint(reason: str, grant: GrantTerms) -> str:
    if reason == "not_yet_valid":
        return f"retry after {iso(grant.not_before)}"
    if reason == "quarantined":
        return QUARANTINE_HINT
    if reason == "rekeying":
        return REKEY_HINT
    if reason == "hosted_access_only":
        return "query it with any OpenAI client: base URL BROKER/v1, model ORG/MODEL@VERSION"
    return "ask for access again with a new request (escrow request ORG/NAME@VERSION)"


def _own_grant(uow: UnitOfWork, actor: Principal, grant_id: str) -> Grant:
    authorize(actor, Action.GRANT_READ_OWN)
    grant = uow.session.get(Grant, grant_id)
    if grant is None or str(grant.user_id) != actor.id:
        raise not_found(grant_id)
    return grant
