"""An agreement as shown to people and the API: its words, state, triggers, check-in, votes."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from broker.adapters.db.models import AgreementRelease, AgreementVote, Deposit, ReleaseAgreement
from broker.adapters.db.uow import UnitOfWork
from broker.policy.agreement_rules import agreement_words
from broker.services.agreements.common import (
    active_votes,
    current,
    find_deposit,
    last_checkin,
    parsed,
    required,
)
from broker.services.agreements.triggers import decide
from broker.services.deposits import SEALED
from broker.services.views_types import AgreementView, AgreementVoteView


def show(uow: UnitOfWork, model: object, version: object) -> AgreementView:
    """The agreement in words, its state, what is missing per trigger, check-in and votes.
    Public, like the model's page: trustees and the lab see the same."""
    deposit = find_deposit(uow, model, version)
    row = required(uow, deposit)
    return describe(uow, deposit, row)


def show_if_any(uow: UnitOfWork, model: object, version: object) -> AgreementView | None:
    """`show`, or None when the version exists but has no agreement (404 when it does not)."""
    deposit = find_deposit(uow, model, version)
    row = current(uow, deposit.id)
    return describe(uow, deposit, row) if row is not None else None


def describe(uow: UnitOfWork, deposit: Deposit, row: ReleaseAgreement) -> AgreementView:
    agreement = parsed(row)
    release = deposit.agreement_release
    decision = decide(uow, deposit, row)
    checked_in = last_checkin(uow, deposit.model.org_id)
    votes = active_votes(uow, row.id)
    if release is not None:
        state = f"released: {release.trigger}"
    elif deposit.state == SEALED:
        state = "sealed"
    else:
        state = f"not sealed yet ({deposit.state})"
    return {
        "model": deposit.model.full_name,
        "version": deposit.version,
        "deposit_id": deposit.id,
        "state": state,
        "number": row.number,
        "sha256": row.sha256,
        "text": row.text,
        "attached_at": row.created_at.isoformat(),
        "words": agreement_words(agreement),
        "trustees": list(agreement.trustees),
        "release": None
        if release is None
        else {
            "trigger": release.trigger,
            "unlocks": release.unlocks,
            "released_at": release.released_at.isoformat(),
        },
        "triggers": [
            {
                "name": t.name,
                "unlocks": t.unlocks,
                "met": t.met,
                "missing": list(t.missing),
                "reasons": list(t.reasons),
            }
            for t in decision.triggers
        ],
        "last_checkin": checked_in.isoformat() if checked_in else None,
        "lab_released_at": row.lab_released_at.isoformat() if row.lab_released_at else None,
        "votes": [describe_vote(v) for v in votes],
        "quarantined_at": _iso(deposit.quarantined_at),
    }


def describe_vote(vote: AgreementVote) -> AgreementVoteView:
    return {
        "trustee": vote.trustee,
        "vote": "amend" if vote.proposal_sha256 else "release",
        "proposal_sha256": vote.proposal_sha256,
        "at": vote.created_at.isoformat(),
        "withdrawn_at": vote.withdrawn_at.isoformat() if vote.withdrawn_at else None,
        "proof": "age-challenge" if vote.proof == "age-challenge" else "ssh-signature",
        "key": vote.key_id,
        "ssh_key": vote.ssh_key_id,
    }


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def states(uow: UnitOfWork) -> dict[str, str]:
    """deposit id -> `sealed` or `released: TRIGGER`, for each sealed version with an agreement
    (the public list of models links each to its agreement's page)."""
    rows = uow.session.execute(
        select(ReleaseAgreement.deposit_id, AgreementRelease.trigger)
        .join(Deposit, Deposit.id == ReleaseAgreement.deposit_id)
        .outerjoin(AgreementRelease, AgreementRelease.deposit_id == Deposit.id)
        .where(Deposit.state == SEALED)
    ).all()
    return {d: f"released: {t}" if t else "sealed" for d, t in rows}
