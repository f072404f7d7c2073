"""The lab's check-ins, trustees' proven votes and their withdrawal, the lab's early release."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from broker.adapters.db.models import (
    AgreementCheckin,
    AgreementRelease,
    AgreementVote,
    Deposit,
    Organisation,
    ReleaseAgreement,
    ResearcherKey,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain import sshsig
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import Principal, PrincipalKind
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound
from broker.services.agreements.common import (
    NAMESPACE,
    AgreementBinds,
    find_deposit,
    name_of,
    org_of,
    parsed,
    required,
    subject_of,
    verified_email,
)
from broker.services.agreements.triggers import fire_if_met
from broker.services.deposits import SEALED
from broker.services.keys import fingerprint, require_recent_login
from broker.services.ndas import signer_key
from broker.services.people import audit_subject

SSH_SIGNATURE, AGE_CHALLENGE = "ssh-signature", "age-challenge"


def checkin(uow: UnitOfWork, actor: Principal, org: str) -> AgreementCheckin:
    """The lab says it is there: every `lab_silence` switch of its agreements starts again."""
    authorize(actor, Action.AGREEMENT_CHECKIN, org)
    found = uow.session.scalar(select(Organisation).where(Organisation.name == org))
    if found is None:
        raise NotFound(f"organisation {org!r} does not exist", hint="check its name")
    row = AgreementCheckin(
        org_id=found.id,
        user_id=int(actor.id) if actor.kind == PrincipalKind.USER else None,
        created_at=now(),
    )
    uow.session.add(row)
    uow.session.flush()
    uow.audit(
        AuditAction.AGREEMENT_CHECKIN, actor, {"org": org}, {"at": row.created_at.isoformat()}
    )
    uow.commit()
    return row


def vote_message(deposit: Deposit, row: ReleaseAgreement, proposal: str | None) -> str:
    """What a trustee signs: the version, the agreement in force, and what the vote is for."""
    what = f"amend to {proposal}" if proposal else "release"
    return (
        "weights-escrow release agreement vote\n"
        f"version: {name_of(deposit)}\n"
        f"deposit: {deposit.id}\n"
        f"agreement: {row.sha256}\n"
        f"vote: {what}\n"
    )


def message_for(uow: UnitOfWork, model: object, version: object, proposal: object) -> str:
    """The vote message for the agreement in force now (what `escrow agreement vote` signs)."""
    deposit = find_deposit(uow, model, version)
    return vote_message(deposit, required(uow, deposit), proposal_of(proposal))


def vote(
    escrow: Escrow,
    uow: UnitOfWork,
    actor: Principal,
    model: object,
    version: object,
    ssh_signature: object,
    proposal: object = None,
) -> tuple[AgreementVote, bool]:
    """Record a trustee's vote signed with a proven ssh key (to release, or for one amendment
    text); fire the agreement when it is met. Returns (vote, created). The other proof, an
    answered age challenge, is `challenges.vote_by_challenge`."""
    require_recent_login(actor, Action.AGREEMENT_VOTE)
    deposit, row, user, trustee = trustee_of(uow, actor, model, version)
    proposal_sha = proposal_of(proposal)
    require_open(deposit, proposal_sha)
    message = vote_message(deposit, row, proposal_sha)
    if not isinstance(ssh_signature, str) or not ssh_signature.strip():
        raise InvalidInput(
            "'ssh_signature' is missing: a trustee's vote is signed (or answers an age "
            "challenge: 'challenge' and 'response')",
            hint=f"escrow agreement vote {name_of(deposit)} --ssh-key ~/.ssh/id_ed25519 signs "
            "it; --identity key.txt answers a challenge instead",
        )
    signature = sshsig.parse_armored(ssh_signature)
    key = signer_key(uow, user.id, signature)
    sshsig.verify(signature, message.encode("utf-8"), NAMESPACE)
    armored = sshsig.armor(sshsig.encode_blob(signature))
    proof = Proof(
        kind=SSH_SIGNATURE,
        key=key,
        ssh_signature=armored,
        audit={"ssh_key": key.id, "ssh_signature": armored},
    )
    return cast_vote(escrow, uow, actor, Ballot(deposit, row, user, trustee, proposal_sha), proof,
                     message)


@dataclass(frozen=True)
class Ballot:
    """Whose vote on what: the version, its agreement in force, the trustee, the proposal."""

    deposit: Deposit
    row: ReleaseAgreement
    user: User
    trustee: str
    proposal_sha: str | None


@dataclass(frozen=True)
class Proof:
    """How the trustee proved the vote: the kind, the proven key, what goes on the log."""

    kind: str
    key: ResearcherKey
    audit: dict[str, Any]
    ssh_signature: str | None = None
    challenge_id: str | None = None


def cast_vote(
    escrow: Escrow, uow: UnitOfWork, actor: Principal, ballot: Ballot, proof: Proof, message: str
) -> tuple[AgreementVote, bool]:
    """Record a proven vote (or find the same one already there), log it, fire the agreement
    when it is met, commit."""
    deposit, row, user = ballot.deposit, ballot.row, ballot.user
    existing = _active_vote(uow, row.id, user.id, ballot.proposal_sha)
    if existing is not None:
        uow.commit()  # a consumed challenge stays consumed
        return existing, False
    cast = AgreementVote(
        agreement_id=row.id,
        user_id=user.id,
        trustee=ballot.trustee,
        proposal_sha256=ballot.proposal_sha,
        message=message,
        proof=proof.kind,
        key_id=proof.key.id,
        ssh_signature=proof.ssh_signature,
        ssh_key_id=proof.key.id if proof.kind == SSH_SIGNATURE else None,
        challenge_id=proof.challenge_id,
        created_at=now(),
    )
    uow.session.add(cast)
    uow.session.flush()
    uow.audit(
        AuditAction.AGREEMENT_VOTED,
        actor,
        {**subject_of(deposit), **audit_subject(user)},
        {
            "agreement_sha256": row.sha256,
            "vote": "amend" if ballot.proposal_sha else "release",
            "proposal_sha256": ballot.proposal_sha,
            "message_sha256": hashlib.sha256(message.encode()).hexdigest(),
            "proof": proof.kind,
            "key": proof.key.id,
            "key_fingerprint": fingerprint(proof.key.recipient),
            **proof.audit,
        },
    )
    if ballot.proposal_sha is None:
        fire_if_met(escrow, uow, deposit, row, actor)
    uow.commit()
    return cast, True


def require_open(deposit: Deposit, proposal_sha: str | None) -> None:
    """A release vote after the release fired has nothing left to count toward."""
    if proposal_sha is None and deposit.agreement_release is not None:
        raise Conflict(
            f"{name_of(deposit)} was already released under trigger "
            f"{deposit.agreement_release.trigger}: no vote is needed",
            hint=f"escrow agreement show {name_of(deposit)}",
        )


def withdraw(
    uow: UnitOfWork, actor: Principal, model: object, version: object, proposal: object = None
) -> AgreementVote:
    """Withdraw one's vote: possible until the release it counts toward has fired."""
    authorize(actor, Action.AGREEMENT_VOTE)
    deposit, row, user, _ = trustee_of(uow, actor, model, version)
    proposal_sha = proposal_of(proposal)
    release = deposit.agreement_release
    if proposal_sha is None and release is not None:
        uow.audit(
            AuditAction.AGREEMENT_CHANGE_REFUSED,
            actor,
            {**subject_of(deposit), **audit_subject(user)},
            {
                "attempt": "withdraw_vote",
                "trigger": release.trigger,
                "reason": "the quorum was reached and the release is not undone",
            },
        )
        uow.commit()
        raise AgreementBinds(
            f"the quorum was reached: {name_of(deposit)} was released under trigger "
            f"{release.trigger} at {release.released_at.isoformat(timespec='seconds')}, and a "
            "release is not undone; the attempt is on the audit log",
            hint=f"escrow agreement show {name_of(deposit)}",
        )
    ballot = _active_vote(uow, row.id, user.id, proposal_sha)
    if ballot is None:
        raise NotFound(
            "you have no vote to withdraw on the agreement in force",
            hint=f"escrow agreement show {name_of(deposit)} lists the votes",
        )
    ballot.withdrawn_at = now()
    uow.audit(
        AuditAction.AGREEMENT_VOTE_WITHDRAWN,
        actor,
        {**subject_of(deposit), **audit_subject(user)},
        {"agreement_sha256": row.sha256, "proposal_sha256": proposal_sha, "vote": ballot.id},
    )
    uow.commit()
    return ballot


def lab_release(
    escrow: Escrow, uow: UnitOfWork, actor: Principal, model: object, version: object
) -> AgreementRelease | None:
    """The lab's admin releases the version early (the `lab_release` condition); the agreement
    fires at once if that completes one of its triggers."""
    deposit = find_deposit(uow, model, version)
    authorize(actor, Action.AGREEMENT_RELEASE, org_of(deposit))
    _require_sealed(deposit)
    row = required(uow, deposit, lock=True)
    if row.lab_released_at is None:
        row.lab_released_at = now()
        uow.audit(
            AuditAction.AGREEMENT_LAB_RELEASED, actor, subject_of(deposit), {"sha256": row.sha256}
        )
    release = fire_if_met(escrow, uow, deposit, row, actor)
    uow.commit()
    return release


def trustee_of(
    uow: UnitOfWork, actor: Principal, model: object, version: object
) -> tuple[Deposit, ReleaseAgreement, User, str]:
    deposit = find_deposit(uow, model, version)
    _require_sealed(deposit)
    row = required(uow, deposit, lock=True)
    found = verified_email(uow, actor)
    if found is None:
        raise NotFound(f"user {actor.id} does not exist", hint="log in again")
    user, email = found
    if not email or email not in parsed(row).trustees:
        raise Forbidden(
            f"you are not a trustee of {name_of(deposit)}'s release agreement (trustees are named "
            "by verified e-mail address, and yours is "
            f"{'not verified' if not email else 'not among them'})",
            hint=f"escrow agreement show {name_of(deposit)} lists its trustees",
        )
    return deposit, row, user, email


def _require_sealed(deposit: Deposit) -> None:
    if deposit.state != SEALED:
        raise Conflict(
            f"{name_of(deposit)} is not sealed yet ({deposit.state}): its agreement binds from "
            "the seal on",
            hint=f"wait for the worker to verify and seal it; escrow agreement show "
            f"{name_of(deposit)} says its state",
        )


def proposal_of(value: object) -> str | None:
    if value is None or value == "":
        return None
    if (
        not isinstance(value, str)
        or len(value) != 64
        or not all(c in "0123456789abcdef" for c in value)
    ):
        raise InvalidInput(
            "'proposal_sha256' must be the SHA-256 (64 hex digits) of the amended agreement",
            hint="escrow agreement vote … --amendment FILE computes it",
        )
    return value


def _active_vote(
    uow: UnitOfWork, agreement_id: int, user_id: int, proposal: str | None
) -> AgreementVote | None:
    query = select(AgreementVote).where(
        AgreementVote.agreement_id == agreement_id,
        AgreementVote.user_id == user_id,
        AgreementVote.withdrawn_at.is_(None),
    )
    if proposal is None:
        query = query.where(AgreementVote.proposal_sha256.is_(None))
    else:
        query = query.where(AgreementVote.proposal_sha256 == proposal)
    return uow.session.scalar(query)
