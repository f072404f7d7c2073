"""Grants and key releases: what an approved request lets its researcher do, and for how long.

A grant is fixed when it is made: the deposit, the researcher's key pinned at approval (keys
registered later do not receive its releases; a grant of hosted access, inference or internals,
releases nothing and is pinned to no key), `not_before`, `expires_at`, and how many times
each file's key may be released. Revocation takes effect on the next call.

A renewal (asked by `broker.services.access.request_renewal`, when the policy allows it) is a new
request that names the grant it renews; approved, it makes a new grant for the same key that
starts when the old one ends (or now, if that has passed), so access goes on without a gap. Each
grant counts its own key releases. Only an active grant can be renewed, and only once: the
renewal is renewed in turn once it is active. Revoking a grant revokes the renewals continuing
it, or the access stopped now would come back when they start.

Key releases under a grant, and its signed manifest, are `broker.services.grant_release`.
"""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import func, select

from broker.adapters.db.models import (
    AccessRequest,
    Deposit,
    Grant,
    KeyRelease,
    Model,
    Organisation,
    ResearcherKey,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.hosting import RELEASING_KINDS, WEIGHTS
from broker.domain.principals import Principal, PrincipalKind
from broker.domain.states import GrantState
from broker.errors import Conflict, EscrowError, Forbidden, NotFound, Unauthorized
from broker.services.keys import fingerprint
from broker.services.people import audit_subject
from broker.services.views_types import GrantView

ACTIVE, PENDING, EXPIRED, REVOKED = (
    GrantState.ACTIVE,
    GrantState.NOT_YET_VALID,
    GrantState.EXPIRED,
    GrantState.REVOKED,
)


class RenewalRefused(Forbidden):
    """The policy of the grant's deposit does not let grants be renewed."""

    title = "renewal refused"


class GrantTerms(Protocol):
    """What the rules below read of a grant: a `Grant`, or a row of the key release's query."""

    @property
    def id(self) -> str: ...
    @property
    def deposit_id(self) -> str: ...
    @property
    def not_before(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def revoked_at(self) -> datetime | None: ...


# --- the rules (pure) -------------------------------------------------------------------------


def state_at(grant: GrantTerms, moment: datetime) -> GrantState:
    """active, not-yet-valid, expired or revoked at `moment` (revocation wins)."""
    if grant.revoked_at is not None:
        return REVOKED
    if moment < grant.not_before:
        return PENDING
    if moment >= grant.expires_at:
        return EXPIRED
    return ACTIVE


def refusal(grant: GrantTerms, moment: datetime) -> tuple[str, str] | None:
    """(reason code, words) when the grant allows nothing at `moment`, else None."""
    state = state_at(grant, moment)
    if state == REVOKED:
        assert grant.revoked_at is not None
        return "revoked", f"grant {grant.id} was revoked at {iso(grant.revoked_at)}"
    if state == PENDING:
        return "not_yet_valid", f"grant {grant.id} is valid from {iso(grant.not_before)}"
    if state == EXPIRED:
        return "expired", f"grant {grant.id} expired at {iso(grant.expires_at)}"
    return None


def url_ttl(grant: GrantTerms, moment: datetime, longest_s: int) -> int:
    """Seconds a download URL lives: min(longest_s, time left on the grant), at least 1."""
    left = math.ceil((grant.expires_at - moment).total_seconds())
    return max(1, min(longest_s, left))


def renewal_start(renewed: Grant, moment: datetime) -> datetime:
    """When the grant renewing `renewed` starts: as the old one ends, so that access goes on
    without a gap or an overlap (state_at: expired at expires_at, active from not_before);
    from `moment` if the old one has ended already (the reviewers took their time)."""
    return max(moment, renewed.expires_at)


def renewal_conflict(grant: Grant, moment: datetime) -> tuple[str, str] | None:
    """(what is wrong, what to do) when `grant` cannot be renewed at `moment`, else None:
    only an active grant continues; a revoked or expired one needs a new request."""
    state = state_at(grant, moment)
    if state == PENDING:
        return (
            f"grant {grant.id} is not active yet (valid from {iso(grant.not_before)}): only an "
            "active grant can be renewed",
            f"renew it once it is active, from {iso(grant.not_before)}",
        )
    if state == REVOKED:
        assert grant.revoked_at is not None
        why = f"was revoked at {iso(grant.revoked_at)}"
    elif state == EXPIRED:
        why = f"expired at {iso(grant.expires_at)}"
    else:
        return None
    return (
        f"grant {grant.id} {why}: only an active grant can be renewed",
        "ask for access anew: escrow request ORG/NAME@VERSION --purpose …",
    )


# --- making and revoking ----------------------------------------------------------------------


def create_grant(
    uow: UnitOfWork,
    request: AccessRequest,
    key: ResearcherKey | None,
    *,
    not_before: datetime,
    expires_at: datetime,
    releases_per_file: int,
    kind: str = WEIGHTS,
) -> Grant:
    """A new grant for an approved request (the caller audits it with `audit_grant`). A grant
    that releases file keys (weights, hosting) is pinned to `key`; one of hosted access
    (inference, internals) to none: `key` must be None (nothing is ever released to it)."""
    if (kind in RELEASING_KINDS) != (key is not None):
        raise EscrowError(  # a programming error: the database's check refuses it too
            f"a {kind} grant is made {'with' if kind in RELEASING_KINDS else 'without'} a key",
            hint="pass the researcher's pinned key for weights and hosting grants only",
        )
    grant = Grant(
        id="gr_" + secrets.token_hex(8),
        request_id=request.id,
        user_id=request.user_id,
        deposit_id=request.deposit_id,
        key_id=key.id if key else None,
        recipient=key.recipient if key else None,
        not_before=not_before,
        expires_at=expires_at,
        releases_per_file=releases_per_file,
        created_at=not_before,
        kind=kind,
    )
    uow.session.add(grant)
    uow.session.flush()
    return grant


def audit_grant(
    uow: UnitOfWork, actor: Principal, researcher: User, grant: Grant, decision: Any
) -> None:
    subject = {
        **audit_subject(researcher),
        "grant": grant.id,
        "request": grant.request_id,
        "deposit": grant.deposit_id,
    }
    request = uow.session.get(AccessRequest, grant.request_id)
    if request is not None and request.renews_grant_id:
        subject["renews_grant"] = request.renews_grant_id  # the chain of a continued access
    if grant.kind != WEIGHTS:  # a weights grant's leaf stays as it was before there were kinds
        subject["kind"] = grant.kind
    # a grant of hosted access has no key: its leaf names none
    pinned = {} if grant.recipient is None else {
        "key": grant.key_id, "key_fingerprint": fingerprint(grant.recipient)}
    uow.audit(
        AuditAction.GRANT_CREATED,
        actor,
        subject,
        {
            **pinned,
            "not_before": iso(grant.not_before),
            "expires_at": iso(grant.expires_at),
            "releases_per_file": grant.releases_per_file,
            "policy": decision.policy_id,
            "policy_sha256": decision.policy_sha256,
        },
    )


def grant_to_renew(uow: UnitOfWork, actor: Principal, grant_id: str) -> Grant:
    """The actor's grant `grant_id` if it can be renewed now, its row locked until commit (two
    renewals of one grant at once: one after the other). Conflict saying why it cannot."""
    grant = _locked_grant(uow, grant_id)
    try:
        authorize(actor, Action.GRANT_RENEW, owner=str(grant.user_id))
    except Forbidden:
        # Someone else's grant: answered as if it did not exist, like every other grant route.
        raise not_found(grant_id) from None
    conflict = renewal_conflict(grant, now())
    if conflict is not None:
        raise Conflict(conflict[0], hint=conflict[1])
    successor = renewal_of(uow, grant)
    if successor is not None:
        raise Conflict(
            f"grant {grant.id} was renewed already: grant {successor.id} continues it from "
            f"{iso(successor.not_before)} to {iso(successor.expires_at)}",
            hint=f"renew grant {successor.id} once it is active",
        )
    return grant


def renewal_of(uow: UnitOfWork, grant: Grant) -> Grant | None:
    """The grant an approved renewal of `grant` made, unless it was revoked (then the
    researcher may ask to renew again, as after a denial)."""
    return uow.session.scalar(
        select(Grant)
        .join(AccessRequest, Grant.request_id == AccessRequest.id)
        .where(AccessRequest.renews_grant_id == grant.id, Grant.revoked_at.is_(None))
    )


def revoke(uow: UnitOfWork, actor: Principal, grant_id: str) -> Grant:
    """Revoke a grant at once (reviewer or admin of the deposit's organisation), and the
    renewals that continue it: else access revoked now would come back when they start."""
    if actor.kind == PrincipalKind.TOKEN:
        raise Unauthorized(
            "grant.revoke is done by a person logged in, not by a service token",
            hint="log in (`escrow login BROKER`) as a reviewer or admin of the organisation",
        )
    grant = _locked_grant(uow, grant_id)
    authorize(actor, Action.GRANT_REVOKE, _org_of(grant))
    if grant.revoked_at is not None:
        raise Conflict(
            f"grant {grant.id} was revoked already, at {iso(grant.revoked_at)}",
            hint="nothing to do: it allows no key release any more",
        )
    continued = _continuations(uow, grant)
    moment = now()
    for revoked in (grant, *continued):
        revoked.revoked_at, revoked.revoked_by = moment, actor.id
    researcher = uow.session.get(User, grant.user_id)
    assert researcher is not None  # a foreign key
    for revoked in (grant, *continued):
        details = {"expires_at": iso(revoked.expires_at)}
        if revoked is not grant:
            details["with"] = grant.id  # revoked as a renewal continuing that grant
        uow.audit(
            AuditAction.GRANT_REVOKED,
            actor,
            {**audit_subject(researcher), "grant": revoked.id, "deposit": revoked.deposit_id},
            details,
        )
    uow.commit()
    return grant


def _continuations(uow: UnitOfWork, grant: Grant) -> list[Grant]:
    """The unrevoked renewals continuing `grant`, the renewal of a renewal included, in order."""
    found: list[Grant] = []
    later = renewal_of(uow, grant)
    while later is not None:
        found.append(later)
        later = renewal_of(uow, later)
    return found


# --- reading ----------------------------------------------------------------------------------


def my_grants(uow: UnitOfWork, actor: Principal) -> list[Grant]:
    authorize(actor, Action.GRANT_READ_OWN)
    return list(
        uow.session.scalars(
            select(Grant).where(Grant.user_id == int(actor.id)).order_by(Grant.created_at, Grant.id)
        )
    )


def org_grants(uow: UnitOfWork, actor: Principal, org: str) -> list[Grant]:
    authorize(actor, Action.GRANT_READ_ORG, org)
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


def describe(uow: UnitOfWork, grant: Grant, moment: datetime | None = None) -> GrantView:
    deposit = grant.deposit
    releases = dict(
        uow.session.execute(
            select(KeyRelease.file_idx, func.count())
            .where(KeyRelease.grant_id == grant.id)
            .group_by(KeyRelease.file_idx)
        ).all()
    )
    request = uow.session.get(AccessRequest, grant.request_id)
    return {
        "id": grant.id,
        "request_id": grant.request_id,
        "renews_grant_id": request.renews_grant_id if request else None,
        "model": deposit.model.full_name,
        "version": deposit.version,
        "deposit_id": deposit.id,
        "researcher": str(grant.user_id),
        "key_id": grant.key_id,
        "recipient": grant.recipient,
        "key_fingerprint": fingerprint(grant.recipient) if grant.recipient else None,
        "state": state_at(grant, moment or now()),
        "not_before": iso(grant.not_before),
        "expires_at": iso(grant.expires_at),
        "revoked_at": iso(grant.revoked_at) if grant.revoked_at else None,
        "releases_per_file": grant.releases_per_file,
        "kind": grant.kind,
        "requests_per_minute": grant.requests_per_minute,
        "tokens_per_day": grant.tokens_per_day,
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


# --- helpers ----------------------------------------------------------------------------------


def _locked_grant(uow: UnitOfWork, grant_id: str) -> Grant:
    """The grant, its row locked until commit: releases and revocation of one grant serialise,
    so a release counted against the limit or a revocation is seen by the next call."""
    grant = uow.session.scalar(
        select(Grant)
        .where(Grant.id == grant_id)
        .with_for_update()
        .execution_options(populate_existing=True)  # what is committed now, not what was read
    )
    if grant is None:
        raise not_found(grant_id)
    return grant


def not_found(grant_id: str) -> NotFound:
    return NotFound(
        f"grant {grant_id!r} does not exist or is not yours",
        hint="list your grants with `escrow grants`",
    )


def _org_of(grant: Grant) -> str:
    return grant.deposit.model.organisation.name


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
