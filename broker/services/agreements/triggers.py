"""Evaluating an agreement on the facts of now, firing a met trigger, the policy it unlocks."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from broker.adapters.db.models import AgreementRelease, Deposit, ReleaseAgreement
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import SYSTEM, Principal
from broker.policy.agreement import PUBLIC
from broker.policy.agreement_rules import (
    AgreementDecision,
    AgreementFacts,
    evaluate_agreement,
    public_policy,
)
from broker.policy.schema import Policy
from broker.services import notifications
from broker.services.agreements.common import (
    AGREEMENTS_DIR,
    active_votes,
    current,
    last_checkin,
    org_of,
    parsed,
    policy_library,
    subject_of,
)
from broker.services.deposits import SEALED, deposit_prefix


def gather_facts(
    uow: UnitOfWork,
    deposit: Deposit,
    row: ReleaseAgreement,
    *,
    proposal: str | None = None,
    actor: Principal | None = None,
    at: datetime | None = None,
) -> AgreementFacts:
    """What the agreement decides on now; `proposal`: votes for that amendment text instead."""
    checked_in = last_checkin(uow, deposit.model.org_id)
    since = max(row.created_at, checked_in) if checked_in else row.created_at
    votes = frozenset(
        v.trustee
        for v in active_votes(uow, row.id)
        if v.withdrawn_at is None and v.proposal_sha256 == proposal
    )
    return AgreementFacts(
        now=at or now(),
        silent_since=since,
        votes=votes,
        lab_released=row.lab_released_at is not None,
        lab_admin=actor is not None and actor.holds(org_of(deposit), ("admin",)),
    )


def decide(
    uow: UnitOfWork, deposit: Deposit, row: ReleaseAgreement, at: datetime | None = None
) -> AgreementDecision:
    return evaluate_agreement(parsed(row), gather_facts(uow, deposit, row, at=at))


def fire_if_met(
    escrow: Escrow,
    uow: UnitOfWork,
    deposit: Deposit,
    row: ReleaseAgreement,
    actor: Principal,
    at: datetime | None = None,
) -> AgreementRelease | None:
    """Release the version if a trigger is met now (or `at`), in the caller's transaction."""
    if deposit.state != SEALED:
        return None
    if deposit.agreement_release is not None:
        return deposit.agreement_release
    decision = decide(uow, deposit, row, at)
    if not decision.released:
        return None
    assert decision.trigger is not None and decision.unlocks is not None
    release = AgreementRelease(
        deposit_id=deposit.id,
        agreement_id=row.id,
        trigger=decision.trigger,
        unlocks=decision.unlocks,
        released_at=at or now(),
    )
    uow.session.add(release)
    uow.session.flush()
    uow.session.expire(deposit, ["agreement_release"])
    met = next(t for t in decision.triggers if t.name == decision.trigger)
    document = {
        "deposit_id": deposit.id,
        "agreement_sha256": row.sha256,
        "trigger": release.trigger,
        "unlocks": release.unlocks,
        "released_at": release.released_at.isoformat(),
    }
    escrow.store.put_bytes(
        deposit_prefix(deposit.id) + AGREEMENTS_DIR + "released.json",
        json.dumps(document, sort_keys=True).encode(),
    )
    uow.audit(
        AuditAction.AGREEMENT_TRIGGERED,
        actor,
        subject_of(deposit),
        {**document, "reasons": list(met.reasons)},
    )
    notifications.agreement_triggered(
        uow, deposit, release.trigger, release.unlocks, release.released_at,
        parsed(row).trustees,
    )
    return release


def fire_due(escrow: Escrow, at: datetime | None = None) -> list[str]:
    """The worker's step: every sealed, unreleased version whose agreement is met now (or
    `at`: tests move the clock) is released (time-based triggers: a date, a lab's silence).
    Returns the deposits released."""
    released = []
    with escrow.uow() as uow:
        rows = uow.session.scalars(
            select(Deposit.id)
            .join(ReleaseAgreement, ReleaseAgreement.deposit_id == Deposit.id)
            .outerjoin(AgreementRelease, AgreementRelease.deposit_id == Deposit.id)
            .where(Deposit.state == SEALED, AgreementRelease.deposit_id.is_(None))
            .distinct()
        ).all()
    for deposit_id in rows:
        with escrow.uow() as uow:
            deposit = uow.session.get(Deposit, deposit_id)
            if deposit is None:
                continue
            row = current(uow, deposit_id, lock=True)
            if row is not None and fire_if_met(escrow, uow, deposit, row, SYSTEM, at):
                uow.commit()
                released.append(deposit_id)
    return released


def unlocked_policy(policy_dir: Path, deposit: Deposit) -> Policy | None:
    """The policy a released version's requests are decided under, or None (not released)."""
    release = deposit.agreement_release
    if release is None:
        return None
    name = deposit.model.full_name
    if release.unlocks == PUBLIC:
        return public_policy(name, release.agreement.sha256)
    policy = policy_library(policy_dir).current().get(release.unlocks)
    if not policy.covers(name):  # unlocked for this version, whatever its model patterns say
        policy = replace(policy, models=(*policy.models, name))
    return policy
