"""Release agreements that bind: attach, amend, check in, vote, release, and fire triggers.

The format and its evaluation are pure (`broker.policy.agreement`); this module gathers the facts
(now, the lab's last check-in, trustees' votes, the lab's early release), records every change on
the audit log, and keeps the texts in the bucket beside the deposit (`deposits/<id>/agreements/`)
so that recovery restores them.

Binding: before a version is sealed, its depositor or admin may attach and replace its agreement
freely. Once sealed, the agreement in force is replaced only by an amendment that its own
amendment rule allows (by default the lab's admin proposing AND a trustee majority voting for
that exact text); any other replacement or a removal is refused, and the refusal is an audit
event of its own. A release under a trigger is permanent: no route undoes it.

Trustees vote as `ssh-keygen -Y sign -n escrow-agreement` over `vote_message(...)`, with a proven
ssh-ed25519 key of theirs (as NDA signatures), after a fresh login (as key registration).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from broker.adapters.db.models import (
    AgreementCheckin,
    AgreementRelease,
    AgreementVote,
    Deposit,
    Model,
    Organisation,
    ReleaseAgreement,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain import sshsig
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.names import check_version, split_model_name
from broker.domain.principals import SYSTEM, Principal, PrincipalKind
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound
from broker.policy.agreement import (
    PUBLIC,
    Agreement,
    AgreementDecision,
    AgreementFacts,
    agreement_words,
    evaluate_agreement,
    evaluate_amendment,
    load_agreement,
    public_policy,
)
from broker.policy.loader import PolicyLibrary
from broker.policy.schema import Policy
from broker.services.deposits import SEALED, deposit_prefix
from broker.services.keys import require_recent_login
from broker.services.ndas import signer_key
from broker.services.people import audit_subject
from broker.services.views_types import AgreementView, AgreementVoteView

NAMESPACE = sshsig.AGREEMENT_NAMESPACE
AGREEMENTS_DIR = "agreements/"
MAX_TEXT = 64 * 1024


class AgreementBinds(Conflict):
    """A sealed version's agreement cannot be changed that way (the refusal is logged)."""

    title = "release agreement binds"


# --- finding things ----------------------------------------------------------------------------


def find_deposit(uow: UnitOfWork, model: object, version: object) -> Deposit:
    """The deposit of ORG/NAME@VERSION in any state, or a 404."""
    if not isinstance(model, str) or not isinstance(version, str) or not version:
        raise InvalidInput(
            "name the version as ORG/NAME@VERSION", hint="e.g. acme-ai/gpt-small@2024-05"
        )
    org_name, short = split_model_name(model)
    check_version(version)
    deposit = uow.session.scalar(
        select(Deposit)
        .join(Model)
        .join(Organisation)
        .where(Organisation.name == org_name, Model.name == short, Deposit.version == version)
    )
    if deposit is None:
        raise NotFound(
            f"version {version} of {model} does not exist",
            hint=f"deposit it first: escrow deposit DIR --model {model} --version {version}",
        )
    return deposit


def current(uow: UnitOfWork, deposit_id: str, *, lock: bool = False) -> ReleaseAgreement | None:
    """The agreement in force for a deposit (its highest number), if any."""
    query = (
        select(ReleaseAgreement)
        .where(ReleaseAgreement.deposit_id == deposit_id)
        .order_by(ReleaseAgreement.number.desc())
        .limit(1)
    )
    return uow.session.scalar(query.with_for_update() if lock else query)


def _required(uow: UnitOfWork, deposit: Deposit, *, lock: bool = False) -> ReleaseAgreement:
    row = current(uow, deposit.id, lock=lock)
    if row is None:
        name = _name(deposit)
        raise NotFound(
            f"{name} has no release agreement",
            hint=f"its lab's admin attaches one: escrow agreement attach {name} FILE",
        )
    return row


def parsed(row: ReleaseAgreement) -> Agreement:
    return load_agreement(row.text.encode("utf-8"), Path(f"agreement-{row.number}.yaml"))


def _name(deposit: Deposit) -> str:
    return f"{deposit.model.full_name}@{deposit.version}"


def _org(deposit: Deposit) -> str:
    return deposit.model.organisation.name


def _subject(deposit: Deposit) -> dict[str, str]:
    return {"deposit": deposit.id, "model": deposit.model.full_name, "version": deposit.version}


# --- attaching, amending, removing ------------------------------------------------------------


def attach(
    escrow: Escrow,
    uow: UnitOfWork,
    actor: Principal,
    model: object,
    version: object,
    text: object,
) -> tuple[ReleaseAgreement, str]:
    """Attach (or, before sealing, replace; after sealing, amend) a version's agreement.
    Returns the agreement in force and what happened: attached, replaced, amended, unchanged."""
    deposit = find_deposit(uow, model, version)
    org = _org(deposit)
    authorize(
        actor, Action.AGREEMENT_ATTACH if deposit.state != SEALED else Action.AGREEMENT_AMEND, org
    )
    raw = _text(text)
    agreement = load_agreement(raw, Path("agreement.yaml"))
    _check_fits(escrow, agreement, deposit)
    existing = current(uow, deposit.id, lock=True)
    if existing is not None and existing.sha256 == agreement.sha256:
        return existing, "unchanged"
    outcome = "attached" if existing is None else "replaced"
    if deposit.state == SEALED and existing is not None:
        facts = _facts(uow, deposit, existing, proposal=agreement.sha256, actor=actor)
        decision = evaluate_amendment(parsed(existing), facts)
        if not decision.allowed:
            _refuse(
                uow,
                actor,
                deposit,
                existing,
                "amend",
                f"its amendment rule is not met: still missing {'; '.join(decision.missing)}",
                hint="the trustees vote for this exact text (escrow agreement vote "
                f"{_name(deposit)} --amendment FILE), then its lab's admin attaches it again",
                extra={"proposal_sha256": agreement.sha256, "missing": list(decision.missing)},
            )
        outcome = "amended"
    row = ReleaseAgreement(
        deposit_id=deposit.id,
        number=(existing.number + 1) if existing else 1,
        text=raw.decode("utf-8"),
        sha256=agreement.sha256,
        created_by=f"{actor.kind}:{actor.id}",
        created_at=now(),
    )
    uow.session.add(row)
    uow.session.flush()
    _store(escrow, deposit, row)
    details: dict[str, Any] = {"number": row.number, "sha256": row.sha256, "text": row.text}
    if existing is not None:
        details["replaces"] = {"number": existing.number, "sha256": existing.sha256}
    action = (
        AuditAction.AGREEMENT_AMENDED if outcome == "amended" else AuditAction.AGREEMENT_ATTACHED
    )
    uow.audit(action, actor, _subject(deposit), details)
    uow.commit()
    return row, outcome


def remove(
    escrow: Escrow, uow: UnitOfWork, actor: Principal, model: object, version: object
) -> None:
    """Remove a version's agreement: only before it is sealed. After, refused and logged."""
    deposit = find_deposit(uow, model, version)
    authorize(actor, Action.AGREEMENT_ATTACH, _org(deposit))
    existing = _required(uow, deposit, lock=True)
    if deposit.state == SEALED:
        _refuse(
            uow,
            actor,
            deposit,
            existing,
            "remove",
            "a sealed version's agreement is never removed",
            hint=f"replace it by an amendment its own rule allows: escrow agreement attach "
            f"{_name(deposit)} FILE",
        )
    for row in uow.session.scalars(
        select(ReleaseAgreement).where(ReleaseAgreement.deposit_id == deposit.id)
    ):
        uow.session.delete(row)
    uow.audit(AuditAction.AGREEMENT_REMOVED, actor, _subject(deposit), {"sha256": existing.sha256})
    uow.commit()
    for key in escrow.store.list_keys(deposit_prefix(deposit.id) + AGREEMENTS_DIR):
        escrow.store.delete(key)


def _refuse(
    uow: UnitOfWork,
    actor: Principal,
    deposit: Deposit,
    existing: ReleaseAgreement,
    attempt: str,
    why: str,
    *,
    hint: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Log the refused change (committed: a refusal leaves its trace), then raise."""
    uow.audit(
        AuditAction.AGREEMENT_CHANGE_REFUSED,
        actor,
        _subject(deposit),
        {"attempt": attempt, "number": existing.number, "sha256": existing.sha256, **(extra or {})},
    )
    uow.commit()
    raise AgreementBinds(
        f"{_name(deposit)} is sealed under release agreement #{existing.number} "
        f"(sha256 {existing.sha256[:16]}…): {why}; the attempt is on the audit log",
        hint=hint,
    )


def _text(text: object) -> bytes:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(
            "'text' is missing: send the agreement file's text",
            hint="escrow agreement attach ORG/NAME@VERSION FILE sends it",
        )
    raw = text.encode("utf-8")
    if len(raw) > MAX_TEXT:
        raise InvalidInput(f"the agreement is {len(raw)} bytes, more than {MAX_TEXT}", hint="")
    return raw


def _check_fits(escrow: Escrow, agreement: Agreement, deposit: Deposit) -> None:
    """The agreement names this model, and each policy it unlocks is one of the organisation."""
    if agreement.model != deposit.model.full_name:
        raise InvalidInput(
            f"the agreement is for {agreement.model}, not {deposit.model.full_name}",
            hint="fix its `model:` line, or attach it to a version of its model",
        )
    if not agreement.policies():
        return
    policies = _policies(escrow.settings.policy_dir)
    for policy_id in agreement.policies():
        policy = policies.current().get(policy_id)  # NotFound names the policy
        if policy.organisation != _org(deposit):
            raise InvalidInput(
                f"the agreement unlocks policy {policy_id}, which belongs to "
                f"{policy.organisation}, not {_org(deposit)}",
                hint="unlock a policy of the model's own organisation, or public",
            )


_LIBRARIES: dict[Path, PolicyLibrary] = {}


def _policies(policy_dir: Path) -> PolicyLibrary:
    return _LIBRARIES.setdefault(Path(policy_dir), PolicyLibrary(Path(policy_dir)))


def _store(escrow: Escrow, deposit: Deposit, row: ReleaseAgreement) -> None:
    """The text and what identifies it, beside the deposit in the bucket (recovery reads them)."""
    prefix = deposit_prefix(deposit.id) + AGREEMENTS_DIR + f"{row.number:06d}"
    escrow.store.put_bytes(prefix + ".yaml", row.text.encode("utf-8"))
    escrow.store.put_bytes(prefix + ".json", json.dumps(describe_row(row), sort_keys=True).encode())


def describe_row(row: ReleaseAgreement) -> dict[str, Any]:
    return {
        "number": row.number,
        "sha256": row.sha256,
        "created_at": row.created_at.isoformat(),
        "created_by": row.created_by,
    }


# --- check-ins, votes, the lab's release ------------------------------------------------------


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


def last_checkin(uow: UnitOfWork, org_id: int) -> datetime | None:
    return uow.session.scalar(
        select(func.max(AgreementCheckin.created_at)).where(AgreementCheckin.org_id == org_id)
    )


def vote_message(deposit: Deposit, row: ReleaseAgreement, proposal: str | None) -> str:
    """What a trustee signs: the version, the agreement in force, and what the vote is for."""
    what = f"amend to {proposal}" if proposal else "release"
    return (
        "weights-escrow release agreement vote\n"
        f"version: {_name(deposit)}\n"
        f"deposit: {deposit.id}\n"
        f"agreement: {row.sha256}\n"
        f"vote: {what}\n"
    )


def message_for(uow: UnitOfWork, model: object, version: object, proposal: object) -> str:
    """The vote message for the agreement in force now (what `escrow agreement vote` signs)."""
    deposit = find_deposit(uow, model, version)
    return vote_message(deposit, _required(uow, deposit), _proposal(proposal))


def vote(
    escrow: Escrow,
    uow: UnitOfWork,
    actor: Principal,
    model: object,
    version: object,
    ssh_signature: object,
    proposal: object = None,
) -> tuple[AgreementVote, bool]:
    """Record a trustee's signed vote (to release, or for one amendment text); fire the
    agreement when it is met. Returns (vote, created)."""
    require_recent_login(actor, Action.AGREEMENT_VOTE)
    deposit, row, user, trustee = _trustee(uow, actor, model, version)
    proposal_sha = _proposal(proposal)
    if proposal_sha is None and deposit.agreement_release is not None:
        raise Conflict(
            f"{_name(deposit)} was already released under trigger "
            f"{deposit.agreement_release.trigger}: no vote is needed",
            hint=f"escrow agreement show {_name(deposit)}",
        )
    message = vote_message(deposit, row, proposal_sha)
    if not isinstance(ssh_signature, str) or not ssh_signature.strip():
        raise InvalidInput(
            "'ssh_signature' is missing: a trustee's vote is signed",
            hint=f"escrow agreement vote {_name(deposit)} --ssh-key ~/.ssh/id_ed25519 signs it",
        )
    signature = sshsig.parse_armored(ssh_signature)
    key = signer_key(uow, user.id, signature)
    sshsig.verify(signature, message.encode("utf-8"), NAMESPACE)
    existing = _active_vote(uow, row.id, user.id, proposal_sha)
    if existing is not None:
        return existing, False
    ballot = AgreementVote(
        agreement_id=row.id,
        user_id=user.id,
        trustee=trustee,
        proposal_sha256=proposal_sha,
        message=message,
        ssh_signature=sshsig.armor(sshsig.encode_blob(signature)),
        ssh_key_id=key.id,
        created_at=now(),
    )
    uow.session.add(ballot)
    uow.session.flush()
    uow.audit(
        AuditAction.AGREEMENT_VOTED,
        actor,
        {**_subject(deposit), **audit_subject(user)},
        {
            "agreement_sha256": row.sha256,
            "vote": "amend" if proposal_sha else "release",
            "proposal_sha256": proposal_sha,
            "message_sha256": hashlib.sha256(message.encode()).hexdigest(),
            "ssh_key": key.id,
            "ssh_signature": ballot.ssh_signature,
        },
    )
    if proposal_sha is None:
        fire_if_met(escrow, uow, deposit, row, actor)
    uow.commit()
    return ballot, True


def withdraw(
    uow: UnitOfWork, actor: Principal, model: object, version: object, proposal: object = None
) -> AgreementVote:
    """Withdraw one's vote: possible until the release it counts toward has fired."""
    authorize(actor, Action.AGREEMENT_VOTE)
    deposit, row, user, _ = _trustee(uow, actor, model, version)
    proposal_sha = _proposal(proposal)
    release = deposit.agreement_release
    if proposal_sha is None and release is not None:
        uow.audit(
            AuditAction.AGREEMENT_CHANGE_REFUSED,
            actor,
            {**_subject(deposit), **audit_subject(user)},
            {"attempt": "withdraw_vote", "trigger": release.trigger},
        )
        uow.commit()
        raise AgreementBinds(
            f"the quorum was reached: {_name(deposit)} was released under trigger "
            f"{release.trigger} at {release.released_at.isoformat(timespec='seconds')}, and a "
            "release is not undone; the attempt is on the audit log",
            hint=f"escrow agreement show {_name(deposit)}",
        )
    ballot = _active_vote(uow, row.id, user.id, proposal_sha)
    if ballot is None:
        raise NotFound(
            "you have no vote to withdraw on the agreement in force",
            hint=f"escrow agreement show {_name(deposit)} lists the votes",
        )
    ballot.withdrawn_at = now()
    uow.audit(
        AuditAction.AGREEMENT_VOTE_WITHDRAWN,
        actor,
        {**_subject(deposit), **audit_subject(user)},
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
    authorize(actor, Action.AGREEMENT_RELEASE, _org(deposit))
    _require_sealed(deposit)
    row = _required(uow, deposit, lock=True)
    if row.lab_released_at is None:
        row.lab_released_at = now()
        uow.audit(
            AuditAction.AGREEMENT_LAB_RELEASED, actor, _subject(deposit), {"sha256": row.sha256}
        )
    release = fire_if_met(escrow, uow, deposit, row, actor)
    uow.commit()
    return release


def _trustee(
    uow: UnitOfWork, actor: Principal, model: object, version: object
) -> tuple[Deposit, ReleaseAgreement, User, str]:
    deposit = find_deposit(uow, model, version)
    _require_sealed(deposit)
    row = _required(uow, deposit, lock=True)
    user = uow.session.get(User, int(actor.id))
    if user is None:
        raise NotFound(f"user {actor.id} does not exist", hint="log in again")
    profile = user.profile
    email = (profile.email or "").lower() if profile and profile.email_verified else ""
    if not email or email not in parsed(row).trustees:
        raise Forbidden(
            f"you are not a trustee of {_name(deposit)}'s release agreement (trustees are named "
            "by verified e-mail address, and yours is "
            f"{'not verified' if not email else 'not among them'})",
            hint=f"escrow agreement show {_name(deposit)} lists its trustees",
        )
    return deposit, row, user, email


def _require_sealed(deposit: Deposit) -> None:
    if deposit.state != SEALED:
        raise Conflict(
            f"{_name(deposit)} is not sealed yet ({deposit.state}): its agreement binds from "
            "the seal on",
            hint=f"wait for the worker to verify and seal it; escrow agreement show "
            f"{_name(deposit)} says its state",
        )


def _proposal(value: object) -> str | None:
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


def active_votes(uow: UnitOfWork, agreement_id: int) -> list[AgreementVote]:
    return list(
        uow.session.scalars(
            select(AgreementVote)
            .where(AgreementVote.agreement_id == agreement_id)
            .order_by(AgreementVote.created_at, AgreementVote.id)
        )
    )


# --- evaluating and firing --------------------------------------------------------------------


def _facts(
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
        lab_admin=actor is not None and actor.holds(_org(deposit), ("admin",)),
    )


def decide(
    uow: UnitOfWork, deposit: Deposit, row: ReleaseAgreement, at: datetime | None = None
) -> AgreementDecision:
    return evaluate_agreement(parsed(row), _facts(uow, deposit, row, at=at))


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
        _subject(deposit),
        {**document, "reasons": list(met.reasons)},
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


# --- the policy a request is decided under ----------------------------------------------------


def unlocked_policy(policy_dir: Path, deposit: Deposit) -> Policy | None:
    """The policy a released version's requests are decided under, or None (not released)."""
    release = deposit.agreement_release
    if release is None:
        return None
    name = deposit.model.full_name
    if release.unlocks == PUBLIC:
        return public_policy(name, release.agreement.sha256)
    policy = _policies(policy_dir).current().get(release.unlocks)
    if not policy.covers(name):  # unlocked for this version, whatever its model patterns say
        policy = replace(policy, models=(*policy.models, name))
    return policy


# --- showing ----------------------------------------------------------------------------------


def show(uow: UnitOfWork, model: object, version: object) -> AgreementView:
    """The agreement in words, its state, what is missing per trigger, check-in and votes.
    Public, like the model's page: trustees and the lab see the same."""
    deposit = find_deposit(uow, model, version)
    row = _required(uow, deposit)
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
    }


def describe_vote(vote: AgreementVote) -> AgreementVoteView:
    return {
        "trustee": vote.trustee,
        "vote": "amend" if vote.proposal_sha256 else "release",
        "proposal_sha256": vote.proposal_sha256,
        "at": vote.created_at.isoformat(),
        "withdrawn_at": vote.withdrawn_at.isoformat() if vote.withdrawn_at else None,
        "ssh_key": vote.ssh_key_id,
    }


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
