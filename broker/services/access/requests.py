"""Asking for access: a request (or its explanation), its withdrawal, and the renewal of a grant."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from broker.adapters.db.models import (
    AccessRequest,
    Deposit,
    Grant,
    Model,
    Organisation,
    ResearcherKey,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.hosting import RELEASING_KINDS, REQUESTABLE_KINDS, WEIGHTS
from broker.domain.names import check_version, split_model_name
from broker.domain.principals import Principal
from broker.errors import Conflict, InvalidInput, NotFound
from broker.policy.evaluate import evaluate
from broker.policy.schema import Policy
from broker.services import grants as grant_service
from broker.services import notifications
from broker.services.access.common import (
    APPROVED,
    DENIED,
    PENDING,
    WITHDRAWN,
    RequestRefused,
    decision_log,
    find_request,
    person,
    request_name,
    request_subject,
    state_of,
    user_of,
)
from broker.services.access.facts import (
    gather_facts,
    policy_for,
)
from broker.services.access.granting import grant_for
from broker.services.access.views import describe_decision
from broker.services.deposits import SEALED
from broker.services.grants import RenewalRefused
from broker.services.keys import proven_keys
from broker.services.people import audit_subject
from broker.services.quarantine import refuse_if_quarantined
from broker.services.views_types import Explanation

MAX_PURPOSE = 2000

MAX_DAYS = 3650


@dataclass(frozen=True)
class _Ask:
    """A request about to be evaluated and recorded: a first request, or a renewal."""

    user: User
    deposit: Deposit
    policy: Policy
    key: ResearcherKey | None  # the key named (a renewal: the renewed grant's), else None
    purpose: str
    days: int | None
    renews: Grant | None = None
    kind: str = WEIGHTS


def explain(
    uow: UnitOfWork,
    actor: Principal,
    policy_dir: Path,
    model: object,
    version: object,
    days: object = None,
    key_id: object = None,
    kind: object = None,
) -> Explanation:
    """What the policy would decide on a request now, without making one (changes nothing)."""
    authorize(actor, Action.REQUEST_CREATE)
    user = user_of(uow, actor)
    deposit = find_sealed_deposit(uow, model, version)
    policy = policy_for(policy_dir, deposit)
    asked = _kind(kind)
    key = _requested_key(uow, user, key_id, asked)
    facts = gather_facts(uow, policy_dir, user, deposit, _days(days), key, [], asked)
    decision = evaluate(policy, facts)
    return {
        "model": deposit.model.full_name,
        "version": deposit.version,
        "deposit_id": deposit.id,
        "decision": describe_decision(decision),
        "would_be": state_of(decision),
    }


def create_request(
    uow: UnitOfWork,
    actor: Principal,
    policy_dir: Path,
    model: object,
    version: object,
    purpose: object,
    days: object = None,
    key_id: object = None,
    kind: object = None,
) -> AccessRequest:
    """Record a request and its decision; raise RequestRefused (after committing) when the
    requester is not eligible."""
    authorize(actor, Action.REQUEST_CREATE)
    user = user_of(uow, actor)
    text = _purpose(purpose)
    requested_days = _days(days)
    deposit = find_sealed_deposit(uow, model, version)
    policy = policy_for(policy_dir, deposit)
    asked = _kind(kind)
    key = _requested_key(uow, user, key_id, asked)
    _refuse_second_pending(uow, user, deposit)
    ask = _Ask(user, deposit, policy, key, text, requested_days, kind=asked)
    return _record(uow, actor, policy_dir, ask)


def _refuse_second_pending(
    uow: UnitOfWork, user: User, deposit: Deposit, renewing: Grant | None = None
) -> None:
    """One pending request per researcher and deposit (a renewal is one too): reviewers see
    each question once, and one request cannot make two grants."""
    pending = uow.session.scalar(
        select(AccessRequest).where(
            AccessRequest.user_id == user.id,
            AccessRequest.deposit_id == deposit.id,
            AccessRequest.state == PENDING,
        )
    )
    if pending is None:
        return
    hint = (
        "wait for the reviewers' decision (escrow requests), or withdraw it: "
        f"escrow requests withdraw {pending.id}"
    )
    if renewing is not None and pending.renews_grant_id == renewing.id:
        raise Conflict(
            f"a renewal of grant {renewing.id} is pending already: request {pending.id}",
            hint=hint,
        )
    what = f", a renewal of grant {pending.renews_grant_id}" if pending.renews_grant_id else ""
    raise Conflict(
        f"you already have a pending request {pending.id} for "
        f"{deposit.model.full_name}@{deposit.version}{what}",
        hint=hint,
    )


def _record(uow: UnitOfWork, actor: Principal, policy_dir: Path, ask: _Ask) -> AccessRequest:
    """Evaluate the policy, store the request with its decision (and its grant when allowed at
    once), audit, commit; then raise RequestRefused when the requester is not eligible."""
    deposit = ask.deposit
    refuse_if_quarantined(deposit)  # nothing recorded: ask again once it is lifted
    facts = gather_facts(uow, policy_dir, ask.user, deposit, ask.days, ask.key, [], ask.kind)
    decision = evaluate(ask.policy, facts)
    request = AccessRequest(
        id="rq_" + secrets.token_hex(8),
        user_id=ask.user.id,
        deposit_id=deposit.id,
        key_id=ask.key.id if ask.key else None,
        purpose=ask.purpose,
        days_requested=ask.days,
        state=state_of(decision),
        policy_id=decision.policy_id,
        policy_sha256=decision.policy_sha256,
        decision=json.dumps(describe_decision(decision), sort_keys=True),
        created_at=facts.now,
        decided_at=None if decision.eligible and not decision.allowed else facts.now,
        renews_grant_id=ask.renews.id if ask.renews else None,
        kind=ask.kind,
    )
    uow.session.add(request)
    uow.session.flush()
    grant = None
    if decision.allowed:
        grant = grant_for(uow, request, ask.policy, decision, facts)
    uow.audit(
        AuditAction.REQUEST_CREATED,
        actor,
        {**audit_subject(ask.user), **request_subject(request)},
        {
            "model": deposit.model.full_name,
            "version": deposit.version,
            "state": request.state,
            **decision_log(decision, facts),
        },
    )
    if grant is not None:
        grant_service.audit_grant(uow, actor, ask.user, grant, decision)
    if request.state == PENDING:
        notifications.request_waiting(uow, request)
    uow.commit()
    if request.state == DENIED:
        raise RequestRefused(
            f"{request_name(request)} for {deposit.model.full_name}@{deposit.version} is refused "
            f"and recorded as denied: {'; '.join(decision.missing) or 'not eligible'}",
            hint="do what is missing, then ask again (a new request); "
            "`escrow request … --explain` shows what the policy decides without asking",
            request=request,
            decision=decision,
        )
    return request


def find_sealed_deposit(uow: UnitOfWork, model: object, version: object) -> Deposit:
    """The sealed deposit of ORG/NAME@VERSION, or a 404 saying which part does not exist."""
    if not isinstance(model, str) or not isinstance(version, str) or not version:
        raise InvalidInput(
            "'model' and 'version' are required",
            hint='e.g. {"model": "acme-ai/gpt-small", "version": "2024-05"}',
        )
    org_name, short = split_model_name(model)
    check_version(version)
    found = uow.session.scalar(
        select(Model).join(Organisation).where(Organisation.name == org_name, Model.name == short)
    )
    if found is None:
        raise NotFound(
            f"model {model} does not exist", hint="check the organisation and the model name"
        )
    deposit = uow.session.scalar(
        select(Deposit).where(Deposit.model_id == found.id, Deposit.version == version)
    )
    if deposit is None or deposit.state != SEALED:
        sealed = uow.session.scalars(
            select(Deposit.version)
            .where(Deposit.model_id == found.id, Deposit.state == SEALED)
            .order_by(Deposit.sealed_at)
        ).all()
        what = "does not exist" if deposit is None else f"is not sealed yet ({deposit.state})"
        raise NotFound(
            f"version {version} of {model} {what}",
            hint=f"versions that can be requested: {', '.join(sealed)}"
            if sealed
            else f"{model} has no sealed version yet",
        )
    return deposit


def _kind(kind: object) -> str:
    """The kind of access asked for: weights unless named (every request before there were
    kinds asked for weights)."""
    if kind is None or kind == "":
        return WEIGHTS
    if kind not in REQUESTABLE_KINDS:
        raise InvalidInput(
            f"'kind' {kind!r} is not a kind of access one can ask for",
            hint=f"use one of {', '.join(REQUESTABLE_KINDS)} (hosting grants are made by the "
            "operator: escrow hosted allow)",
        )
    return str(kind)


def _requested_key(
    uow: UnitOfWork, user: User, key_id: object, kind: str
) -> ResearcherKey | None:
    """The proven key a request names (None: none named). Only weights are released to a key:
    naming one for hosted access (inference, internals) is refused, not ignored, so that
    nobody believes their grant is pinned to it."""
    if key_id is None or key_id == "":
        return None
    if kind not in RELEASING_KINDS:
        raise InvalidInput(
            f"'key_id' names the key file keys are released to, and an {kind} grant releases "
            "none: hosted access needs no key",
            hint=f"leave the key out (no --key) when you ask for {kind} access",
        )
    if not isinstance(key_id, str):
        raise InvalidInput("'key_id' must be a string", hint="e.g. rk_0123456789abcdef")
    for key in proven_keys(uow, user.id):
        if key.id == key_id:
            return key
    raise InvalidInput(
        f"key {key_id} is not a proven, unretired key of yours",
        hint="list your keys with `escrow keys list`; prove a key with `escrow keys prove`",
    )


def _purpose(purpose: object) -> str:
    if not isinstance(purpose, str) or not purpose.strip():
        raise InvalidInput(
            "'purpose' is missing: say what you need the weights for",
            hint='e.g. --purpose "sycophancy interpretability study"',
        )
    text = purpose.strip()
    if len(text) > MAX_PURPOSE:
        raise InvalidInput(
            f"'purpose' is {len(text)} characters long, more than {MAX_PURPOSE}",
            hint="summarise; the reviewers can ask for details",
        )
    return text


def _days(days: object) -> int | None:
    if days is None:
        return None
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise InvalidInput(
            f"'days' must be a whole number of days from 1 to {MAX_DAYS}, not {days!r}",
            hint="leave it out to get the policy's default duration",
        )
    return days


def withdraw(uow: UnitOfWork, actor: Principal, request_id: str) -> AccessRequest:
    """The requester takes back a pending request: it leaves the reviewers' queue, can no longer
    be approved, and stays on the record as withdrawn. Only its requester may (403 for anyone
    else, reviewers included: they deny); a decided request is a conflict (409)."""
    user = person(uow, actor, Action.REQUEST_WITHDRAW)
    # A reviewer deciding now: one after the other.
    request = find_request(uow, request_id, lock=True)
    authorize(actor, Action.REQUEST_WITHDRAW, owner=str(request.user_id))
    if request.state != PENDING:
        message, hint = _not_withdrawable(uow, request)
        raise Conflict(message, hint=hint)
    request.state, request.decided_at = WITHDRAWN, now()
    uow.audit(
        AuditAction.REQUEST_WITHDRAWN,
        actor,
        {**audit_subject(user), **request_subject(request)},
        {"model": request.deposit.model.full_name, "version": request.deposit.version},
    )
    uow.commit()
    return request


def _not_withdrawable(uow: UnitOfWork, request: AccessRequest) -> tuple[str, str]:
    """(what is wrong, what to do) for withdrawing a request that is no longer pending."""
    when = request.decided_at.isoformat(timespec="seconds") if request.decided_at else "?"
    again = "to ask again, make a new request (escrow request ORG/NAME@VERSION --purpose …)"
    what = request_name(request)
    if request.state == WITHDRAWN:
        return f"{what} was withdrawn already, at {when}", f"nothing to do; {again}"
    closed = f"{what} was {request.state} at {when}: only a pending request can be withdrawn"
    if request.state == APPROVED:
        grant = uow.session.scalar(select(Grant).where(Grant.request_id == request.id))
        org = request.deposit.model.organisation.name
        named = f"its grant {grant.id}" if grant else "its grant"
        return closed, (
            f"{named} ends at its expiry; if you no longer need it, ask a reviewer of {org} "
            "to revoke it"
        )
    return closed, f"it stays on the record; {again}"


def request_renewal(
    uow: UnitOfWork,
    actor: Principal,
    policy_dir: Path,
    grant_id: str,
    days: object = None,
    purpose: object = None,
) -> AccessRequest:
    """Ask to continue an active grant of one's own, when the deposit's policy allows renewal:
    a new request naming the grant, evaluated (and refused, pending or granted at once) like
    any other, for the same key; its grant starts when the renewed one ends. `purpose` defaults
    to the renewed request's, `days` to the policy's default (clamped to its longest)."""
    user = person(uow, actor, Action.GRANT_RENEW)
    requested_days = _days(days)
    renewed = grant_service.grant_to_renew(uow, actor, grant_id)
    deposit = renewed.deposit
    policy = policy_for(policy_dir, deposit)
    if not policy.grant.renewal:
        raise RenewalRefused(
            f"grant {renewed.id} cannot be renewed: policy {policy.id} of "
            f"{deposit.model.full_name} does not allow renewal (grant.renewal is false)",
            hint=f"ask for access anew when it ends: escrow request "
            f"{deposit.model.full_name}@{deposit.version} --purpose …",
        )
    first = uow.session.get(AccessRequest, renewed.request_id)
    assert first is not None  # a foreign key
    text = first.purpose if purpose is None else _purpose(purpose)
    key = _renewal_key(uow, renewed)
    _refuse_second_pending(uow, user, deposit, renewing=renewed)
    ask = _Ask(user, deposit, policy, key, text, requested_days, renewed, renewed.kind)
    return _record(uow, actor, policy_dir, ask)


def _renewal_key(uow: UnitOfWork, renewed: Grant) -> ResearcherKey | None:
    """The key the renewed grant is pinned to: a renewal continues access for the same key.
    Hosted access (inference, internals) is pinned to none, and its renewal neither."""
    if renewed.kind not in RELEASING_KINDS:
        return None
    key = uow.session.get(ResearcherKey, renewed.key_id)
    if key is None or key.retired_at is not None or key.proven_at is None:
        raise Conflict(
            f"grant {renewed.id} cannot be renewed: its key {renewed.key_id} has been retired, "
            "and a renewal keeps the key of the grant it continues",
            hint="ask for access anew with a new request (escrow request), which pins your "
            "current key",
        )
    return key
