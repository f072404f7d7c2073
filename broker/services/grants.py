"""Grants and key releases: what an approved request lets its researcher do, and for how long.

A grant is fixed when it is made: the deposit, the researcher's key pinned at approval (keys
registered later do not receive its releases), `not_before`, `expires_at`, and how many times
each file's key may be released. Revocation takes effect on the next call.

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
import math
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from broker import age
from broker.adapters.db.models import (
    AccessRequest,
    Deposit,
    DepositFile,
    Grant,
    KeyRelease,
    Model,
    Organisation,
    ResearcherKey,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain.access import authorize
from broker.domain.clock import now
from broker.domain.parts import payload_size
from broker.domain.principals import Principal
from broker.errors import Conflict, Forbidden, NotFound, Unauthorized
from broker.services.deposits import deposit_identity, deposit_prefix, payload_key
from broker.services.keys import fingerprint
from broker.services.people import audit_subject

ACTIVE, PENDING, EXPIRED, REVOKED = "active", "not-yet-valid", "expired", "revoked"


class ReleaseRefused(Forbidden):
    """The grant does not allow this key release now; the refusal is on the audit log."""

    title = "key release refused"



# --- the rules (pure) -------------------------------------------------------------------------


def state_at(grant: Grant, moment: datetime) -> str:
    """active, not-yet-valid, expired or revoked at `moment` (revocation wins)."""
    if grant.revoked_at is not None:
        return REVOKED
    if moment < grant.not_before:
        return PENDING
    if moment >= grant.expires_at:
        return EXPIRED
    return ACTIVE


def refusal(grant: Grant, moment: datetime) -> tuple[str, str] | None:
    """(reason code, words) when the grant allows nothing at `moment`, else None."""
    state = state_at(grant, moment)
    if state == REVOKED:
        assert grant.revoked_at is not None
        return "revoked", f"grant {grant.id} was revoked at {_iso(grant.revoked_at)}"
    if state == PENDING:
        return "not_yet_valid", f"grant {grant.id} is valid from {_iso(grant.not_before)}"
    if state == EXPIRED:
        return "expired", f"grant {grant.id} expired at {_iso(grant.expires_at)}"
    return None


def url_ttl(grant: Grant, moment: datetime, longest_s: int) -> int:
    """Seconds a download URL lives: min(longest_s, time left on the grant), at least 1."""
    left = math.ceil((grant.expires_at - moment).total_seconds())
    return max(1, min(longest_s, left))


# --- making and revoking ----------------------------------------------------------------------


def create_grant(
    uow: UnitOfWork,
    request: AccessRequest,
    key: ResearcherKey,
    *,
    not_before: datetime,
    expires_at: datetime,
    releases_per_file: int,
) -> Grant:
    """A new grant for an approved request (the caller audits it with `audit_grant`)."""
    grant = Grant(
        id="gr_" + secrets.token_hex(8),
        request_id=request.id,
        user_id=request.user_id,
        deposit_id=request.deposit_id,
        key_id=key.id,
        recipient=key.recipient,
        not_before=not_before,
        expires_at=expires_at,
        releases_per_file=releases_per_file,
        created_at=not_before,
    )
    uow.session.add(grant)
    uow.session.flush()
    return grant


def audit_grant(
    uow: UnitOfWork, actor: Principal, researcher: User, grant: Grant, decision: Any
) -> None:
    uow.audit(
        "grant.created",
        actor,
        {
            **audit_subject(researcher),
            "grant": grant.id,
            "request": grant.request_id,
            "deposit": grant.deposit_id,
        },
        {
            "key": grant.key_id,
            "key_fingerprint": fingerprint(grant.recipient),
            "not_before": _iso(grant.not_before),
            "expires_at": _iso(grant.expires_at),
            "releases_per_file": grant.releases_per_file,
            "policy": decision.policy_id,
            "policy_sha256": decision.policy_sha256,
        },
    )


def revoke(uow: UnitOfWork, actor: Principal, grant_id: str) -> Grant:
    """Revoke a grant at once (reviewer or admin of the deposit's organisation)."""
    if actor.kind == "token":
        raise Unauthorized(
            "grant.revoke is done by a person logged in, not by a service token",
            hint="log in (`escrow login BROKER`) as a reviewer or admin of the organisation",
        )
    grant = _locked_grant(uow, grant_id)
    authorize(actor, "grant.revoke", _org_of(grant))
    if grant.revoked_at is not None:
        raise Conflict(
            f"grant {grant.id} was revoked already, at {_iso(grant.revoked_at)}",
            hint="nothing to do: it allows no key release any more",
        )
    grant.revoked_at, grant.revoked_by = now(), actor.id
    researcher = uow.session.get(User, grant.user_id)
    assert researcher is not None  # a foreign key
    uow.audit(
        "grant.revoked",
        actor,
        {**audit_subject(researcher), "grant": grant.id, "deposit": grant.deposit_id},
        {"expires_at": _iso(grant.expires_at)},
    )
    uow.commit()
    return grant


# --- reading ----------------------------------------------------------------------------------


def my_grants(uow: UnitOfWork, actor: Principal) -> list[Grant]:
    authorize(actor, "grant.read_own")
    return list(
        uow.session.scalars(
            select(Grant).where(Grant.user_id == int(actor.id)).order_by(Grant.created_at, Grant.id)
        )
    )


def org_grants(uow: UnitOfWork, actor: Principal, org: str) -> list[Grant]:
    authorize(actor, "grant.read_org", org)
    return list(
        uow.session.scalars(
            select(Grant)
            .join(Deposit, Grant.deposit_id == Deposit.id)
            .join(Model, Deposit.model_id == Model.id)
            .join(Organisation, Model.org_id == Organisation.id)
            .where(Organisation.name == org)
            .order_by(Grant.created_at, Grant.id)
        )
    )


def describe(uow: UnitOfWork, grant: Grant, moment: datetime | None = None) -> dict[str, Any]:
    deposit = grant.deposit
    releases = dict(
        uow.session.execute(
            select(KeyRelease.file_idx, func.count())
            .where(KeyRelease.grant_id == grant.id)
            .group_by(KeyRelease.file_idx)
        ).all()
    )
    return {
        "id": grant.id,
        "request_id": grant.request_id,
        "model": deposit.model.full_name,
        "version": deposit.version,
        "deposit_id": deposit.id,
        "researcher": str(grant.user_id),
        "key_id": grant.key_id,
        "recipient": grant.recipient,
        "key_fingerprint": fingerprint(grant.recipient),
        "state": state_at(grant, moment or now()),
        "not_before": _iso(grant.not_before),
        "expires_at": _iso(grant.expires_at),
        "revoked_at": _iso(grant.revoked_at) if grant.revoked_at else None,
        "releases_per_file": grant.releases_per_file,
        "files": [
            {
                "index": f.idx,
                "path": f.path,
                "size": f.size,
                "sha256": f.sha256,
                "releases": int(releases.get(f.idx, 0)),
            }
            for f in sorted(deposit.files, key=lambda f: f.path)
        ],
    }


def manifest(escrow: Escrow, uow: UnitOfWork, actor: Principal, grant_id: str) -> dict[str, Any]:
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
) -> dict[str, Any]:
    """A fresh age header of file `index` for the grant's pinned key, and a short-lived URL of
    the unchanged payload. Refusals are committed to the audit log, then raised."""
    authorize(actor, "grant.release")
    grant = _locked_grant(uow, grant_id)
    moment = now()
    if str(grant.user_id) != actor.id:
        _refuse(uow, actor, grant, index, "not_holder", "not the grant's researcher")
        raise _not_found(grant_id)
    why = refusal(grant, moment) or _key_refusal(uow, grant)
    if why is not None:
        _refuse(uow, actor, grant, index, *why)
        raise ReleaseRefused(why[1], hint=_refusal_hint(why[0], grant))
    file = uow.session.scalar(
        select(DepositFile).where(
            DepositFile.deposit_id == grant.deposit_id, DepositFile.idx == index
        )
    )
    if file is None or file.header is None:
        raise NotFound(
            f"the deposit of grant {grant.id} has no file number {index}",
            hint="the grant's files are listed by GET /api/v1/grants (escrow grants --json)",
        )
    done = uow.session.scalar(
        select(func.count())
        .select_from(KeyRelease)
        .where(KeyRelease.grant_id == grant.id, KeyRelease.file_idx == index)
    )
    if done >= grant.releases_per_file:
        words = (
            f"the key of {file.path!r} was released {done} times under grant {grant.id}, "
            f"the most its policy allows ({grant.releases_per_file})"
        )
        _refuse(uow, actor, grant, index, "limit_reached", words)
        raise ReleaseRefused(
            words,
            hint="keep the header you received: it decrypts the payload for as long as you "
            "hold your key; a reviewer may grant a new request",
        )
    # Why unwrap per release: the deposit identity exists in memory only while one header is
    # re-wrapped; with KMS custody every unwrap is on the cloud's own trail, to reconcile.
    identity = deposit_identity(escrow, grant.deposit)
    header = age.rewrap(file.header, [identity], [age.parse_recipient(grant.recipient)])
    header_sha256 = hashlib.sha256(header).hexdigest()
    ttl = url_ttl(grant, moment, escrow.settings.download_url_ttl_s)
    url = escrow.store.presign_get(deposit_prefix(grant.deposit_id) + payload_key(index), ttl)
    uow.session.add(
        KeyRelease(
            grant_id=grant.id, file_idx=index, header_sha256=header_sha256, created_at=moment
        )
    )
    researcher = uow.session.get(User, grant.user_id)
    assert researcher is not None  # a foreign key
    uow.audit(  # last before commit: the audit head's lock is held only this long
        "key.released",
        actor,
        {
            **audit_subject(researcher),
            "grant": grant.id,
            "deposit": grant.deposit_id,
            "file": index,
        },
        {"header_sha256": header_sha256, "key": grant.key_id, "release": done + 1},
    )
    uow.commit()
    return {
        "grant_id": grant.id,
        "deposit_id": grant.deposit_id,
        "index": index,
        "path": file.path,
        "size": file.size,
        "payload_size": payload_size(file.size),
        "sha256": file.sha256,
        "header": base64.b64encode(header).decode(),
        "header_sha256": header_sha256,
        "payload_url": url.url,
        "payload_url_headers": url.headers,
        "payload_url_expires_at": _iso(url.expires_at),
        "releases_left": grant.releases_per_file - done - 1,
        "grant_expires_at": _iso(grant.expires_at),
    }


def _refuse(
    uow: UnitOfWork, actor: Principal, grant: Grant, index: int, reason: str, words: str
) -> None:
    """Commit the refusal to the audit log (the caller raises afterwards)."""
    uow.audit(
        "key.release_refused",
        actor,
        {"grant": grant.id, "deposit": grant.deposit_id, "file": index},
        {"reason": reason, "detail": words},
    )
    uow.commit()


def _key_refusal(uow: UnitOfWork, grant: Grant) -> tuple[str, str] | None:
    """A key the researcher retired (lost, leaked) receives nothing more, even under a grant."""
    key = uow.session.get(ResearcherKey, grant.key_id)
    if key is None or key.retired_at is not None:
        return "key_retired", f"the key {grant.key_id} this grant was issued to has been retired"
    return None


def _refusal_hint(reason: str, grant: Grant) -> str:
    if reason == "not_yet_valid":
        return f"retry after {_iso(grant.not_before)}"
    return "ask for access again with a new request (escrow request ORG/NAME@VERSION)"


# --- helpers ----------------------------------------------------------------------------------


def _locked_grant(uow: UnitOfWork, grant_id: str) -> Grant:
    """The grant, its row locked until commit: releases and revocation of one grant serialise,
    so a release counted against the limit or a revocation is seen by the next call."""
    grant = uow.session.scalar(select(Grant).where(Grant.id == grant_id).with_for_update())
    if grant is None:
        raise _not_found(grant_id)
    return grant


def _own_grant(uow: UnitOfWork, actor: Principal, grant_id: str) -> Grant:
    authorize(actor, "grant.read_own")
    grant = uow.session.get(Grant, grant_id)
    if grant is None or str(grant.user_id) != actor.id:
        raise _not_found(grant_id)
    return grant


def _not_found(grant_id: str) -> NotFound:
    return NotFound(
        f"grant {grant_id!r} does not exist or is not yours",
        hint="list your grants with `escrow grants`",
    )


def _org_of(grant: Grant) -> str:
    return grant.deposit.model.organisation.name


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
