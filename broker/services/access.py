"""Access requests and their reviews: from "a researcher wants the weights" to a grant.

A request names a sealed model version. The policy that matches the model decides, as a pure
function of `Facts` gathered here (the requester's trusted claims, signed NDA texts, proven keys,
the reviews so far): `broker.policy.evaluate`. Every request is stored with the policy's id and
SHA-256 and the decision's reasons, whatever the outcome:

- not eligible (an NDA unsigned, no proven key, a domain not allowed …): stored as `denied`
  with what is missing, and refused (422) saying so; the researcher fixes it and asks again with
  a new request, the old one stays on the record for them and the reviewers;
- eligible, approvals outstanding: `pending`, for the organisation's reviewers;
- allowed (e.g. a policy that approves automatically): `approved`, and the grant is made at once.

A review adds an approval or a denial and evaluates again; when the policy is satisfied the
grant is made (`broker.services.grants.create_grant`). Every request, review and grant is an
audit event carrying the policy's SHA-256 and the reasons, never personal data.

The requester may withdraw a pending request (`withdraw`): it leaves the reviewers' queue and
stays on the record as `withdrawn`. When the policy allows it (`grant.renewal`), the researcher
of an active grant may ask to renew it (`request_renewal`): a request like any other, evaluated
and reviewed the same way, that names the grant it renews; its grant keeps the same key and
starts when the old one ends.
"""

from __future__ import annotations

import functools
import json
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from broker.adapters.db.models import (
    AccessRequest,
    Deposit,
    Grant,
    Membership,
    Model,
    NdaSignature,
    Organisation,
    ResearcherKey,
    Review,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.domain.access import authorize
from broker.domain.clock import now
from broker.domain.names import check_version, split_model_name
from broker.domain.principals import Principal, roles_counting_as
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from broker.policy.evaluate import a, describe_role, evaluate, review_disqualified
from broker.policy.facts import ApprovalFact, Decision, Facts, KeyFact
from broker.policy.loader import PolicyLibrary
from broker.policy.schema import Policy
from broker.services import grants as grant_service
from broker.services import ndas
from broker.services.deposits import SEALED
from broker.services.grants import RenewalRefused, renewal_start
from broker.services.keys import fingerprint, proven_keys
from broker.services.people import audit_subject, roles_of

PENDING, APPROVED, DENIED, WITHDRAWN = "pending", "approved", "denied", "withdrawn"
MAX_PURPOSE = 2000
MAX_COMMENT = 2000
MAX_DAYS = 3650
REVIEWER_ROLES = ("reviewer", "admin")
POST_QUANTUM_TYPES = frozenset({"mlkem768x25519"})


class RequestRefused(InvalidInput):
    """The requester does not meet the policy; the request is on the record as denied."""

    title = "request refused"

    def __init__(self, message: str, *, hint: str, request: AccessRequest, decision: Decision):
        super().__init__(message, hint=hint)
        self.request = request
        self.decision = decision


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


# --- asking -----------------------------------------------------------------------------------


def explain(
    uow: UnitOfWork,
    actor: Principal,
    policy_dir: Path,
    model: object,
    version: object,
    days: object = None,
    key_id: object = None,
) -> dict[str, Any]:
    """What the policy would decide on a request now, without making one (changes nothing)."""
    authorize(actor, "request.create")
    user = _user(uow, actor)
    deposit = find_sealed_deposit(uow, model, version)
    policy = _policy_for(policy_dir, deposit)
    key = _requested_key(uow, user, key_id)
    facts = gather_facts(uow, policy_dir, user, deposit, _days(days), key, [])
    decision = evaluate(policy, facts)
    return {
        "model": deposit.model.full_name,
        "version": deposit.version,
        "deposit_id": deposit.id,
        "decision": describe_decision(decision),
        "would_be": _state_of(decision),
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
    *,
    download_url_ttl_s: int = 900,
) -> AccessRequest:
    """Record a request and its decision; raise RequestRefused (after committing) when the
    requester is not eligible."""
    authorize(actor, "request.create")
    user = _user(uow, actor)
    text = _purpose(purpose)
    requested_days = _days(days)
    deposit = find_sealed_deposit(uow, model, version)
    policy = _policy_for(policy_dir, deposit)
    key = _requested_key(uow, user, key_id)
    _refuse_second_pending(uow, user, deposit)
    return _record(uow, actor, policy_dir, _Ask(user, deposit, policy, key, text, requested_days))


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
    facts = gather_facts(uow, policy_dir, ask.user, deposit, ask.days, ask.key, [])
    decision = evaluate(ask.policy, facts)
    request = AccessRequest(
        id="rq_" + secrets.token_hex(8),
        user_id=ask.user.id,
        deposit_id=deposit.id,
        key_id=ask.key.id if ask.key else None,
        purpose=ask.purpose,
        days_requested=ask.days,
        state=_state_of(decision),
        policy_id=decision.policy_id,
        policy_sha256=decision.policy_sha256,
        decision=json.dumps(describe_decision(decision), sort_keys=True),
        created_at=facts.now,
        decided_at=None if decision.eligible and not decision.allowed else facts.now,
        renews_grant_id=ask.renews.id if ask.renews else None,
    )
    uow.session.add(request)
    uow.session.flush()
    grant = None
    if decision.allowed:
        grant = _grant(uow, request, ask.policy, decision, facts)
    uow.audit(
        "request.created",
        actor,
        {**audit_subject(ask.user), **_request_subject(request)},
        {
            "model": deposit.model.full_name,
            "version": deposit.version,
            "state": request.state,
            **_decision_log(decision, facts),
        },
    )
    if grant is not None:
        grant_service.audit_grant(uow, actor, ask.user, grant, decision)
    uow.commit()
    if request.state == DENIED:
        raise RequestRefused(
            f"{_what(request)} for {deposit.model.full_name}@{deposit.version} is refused "
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


def match_policy(policy_dir: Path, model: str) -> Policy | None:
    """The policy for `model` as the files are now (policies reload without a restart)."""
    return _library(Path(policy_dir)).match(model)


@functools.lru_cache(maxsize=8)
def _library(policy_dir: Path) -> PolicyLibrary:
    return PolicyLibrary(policy_dir)  # re-reads the files when they change; thread-safe


def _policy_for(policy_dir: Path, deposit: Deposit) -> Policy:
    name = deposit.model.full_name
    policy = match_policy(policy_dir, name)
    if policy is None:
        raise InvalidInput(
            f"no policy matches {name}: nothing can be requested for it",
            hint=f"the reviewers of {deposit.model.organisation.name} publish an access policy "
            "for the model first (a file in the broker's policies/)",
        )
    return policy


def _requested_key(uow: UnitOfWork, user: User, key_id: object) -> ResearcherKey | None:
    if key_id is None or key_id == "":
        return None
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


def _state_of(decision: Decision) -> str:
    if decision.allowed:
        return APPROVED
    return PENDING if decision.eligible else DENIED


# --- facts ------------------------------------------------------------------------------------


def gather_facts(
    uow: UnitOfWork,
    policy_dir: Path,
    user: User,
    deposit: Deposit,
    requested_days: int | None,
    key: ResearcherKey | None,
    reviews: list[Review],
) -> Facts:
    """What the policy decides on, from the database: trusted claims (kept at login, only those
    the issuer is authoritative for), organisations, NDA texts signed (a signature counts only
    while its exact text is still the one in policies/ndas/), proven keys (only `key` when the
    request names one), the requested duration and the reviews so far."""
    profile = user.profile
    org_roles, _ = roles_of(uow, user.id)
    org = deposit.model.organisation.name
    approvals = []
    for review in reviews:
        reviewer_roles, _ = roles_of(uow, review.reviewer_id)
        approvals.append(
            ApprovalFact(
                reviewer_id=str(review.reviewer_id),
                reviewer_roles=frozenset(r for o, r in reviewer_roles if o == org),
                reviewer_orgs=frozenset(o for o, _ in reviewer_roles),
                approve=review.approve,
            )
        )
    keys = [key] if key is not None else proven_keys(uow, user.id)
    return Facts(
        model=deposit.model.full_name,
        now=now(),
        requester_id=str(user.id),
        email=profile.email if profile else None,
        email_verified=bool(profile and profile.email_verified),
        affiliations=tuple(json.loads(profile.affiliations)) if profile else (),
        requester_orgs=frozenset(o for o, _ in org_roles),
        signed_ndas=signed_ndas(uow, policy_dir, user.id),
        keys=tuple(key_fact(k) for k in keys),
        requested_days=requested_days,
        approvals=tuple(approvals),
    )


def key_fact(key: ResearcherKey) -> KeyFact:
    return KeyFact(key.id, key.key_type, key.key_type in POST_QUANTUM_TYPES)


def signed_ndas(uow: UnitOfWork, policy_dir: Path, user_id: int) -> dict[str, tuple[str, ...]]:
    texts = ndas.library(policy_dir)
    result: dict[str, list[str]] = {}
    for signature in _signatures(uow, user_id):
        if _signature_counts(texts, signature):
            result.setdefault(signature.nda_id, []).append(signature.nda_version)
    return {nda_id: tuple(versions) for nda_id, versions in result.items()}


def _signatures(uow: UnitOfWork, user_id: int) -> list[NdaSignature]:
    return list(
        uow.session.scalars(
            select(NdaSignature)
            .where(NdaSignature.user_id == user_id)
            .order_by(NdaSignature.signed_at)
        )
    )


def _signature_counts(texts: Any, signature: NdaSignature) -> bool:
    try:
        return texts.get(signature.nda_id, signature.nda_version).sha256 == signature.text_sha256
    except NotFound:
        return False


# --- granting -----------------------------------------------------------------------------------


def _grant(
    uow: UnitOfWork, request: AccessRequest, policy: Policy, decision: Decision, facts: Facts
) -> Grant:
    """The grant of an allowed request: from now for the decided days (never beyond the
    policy's longest), to the researcher's key pinned now: the key the request named, else
    their newest proven key that the policy accepts. Keys registered later get nothing of it."""
    key = _pinned_key(uow, request, policy)
    days = min(decision.grant_days, policy.grant.max_days)
    start = facts.now
    if request.renews_grant_id is not None:
        start = renewal_start(_renewed_grant(uow, request), facts.now)
    return grant_service.create_grant(
        uow,
        request,
        key,
        not_before=start,
        expires_at=start + timedelta(days=days),
        releases_per_file=policy.grant.releases_per_file,
    )


def _renewed_grant(uow: UnitOfWork, request: AccessRequest) -> Grant:
    """The grant a renewal continues; a grant revoked since the renewal was asked for is not
    continued (the reviewers stopped it)."""
    # Locked: a revocation at this moment either comes first (refused here) or sees the new
    # grant as a renewal to revoke with it.
    renewed = uow.session.scalar(
        select(Grant).where(Grant.id == request.renews_grant_id).with_for_update()
    )
    assert renewed is not None  # a foreign key
    if renewed.revoked_at is not None:
        raise Conflict(
            f"renewal {request.id} cannot be granted: grant {renewed.id}, which it renews, "
            f"was revoked at {renewed.revoked_at.isoformat(timespec='seconds')}",
            hint=f"deny it (escrow review deny {request.id}); the researcher may ask anew "
            "with a new request (escrow request)",
        )
    return renewed


def _pinned_key(uow: UnitOfWork, request: AccessRequest, policy: Policy) -> ResearcherKey:
    usable = [
        k
        for k in proven_keys(uow, request.user_id)
        if k.key_type in POST_QUANTUM_TYPES or not policy.require_post_quantum_key
    ]
    if request.key_id is not None:
        usable = [k for k in usable if k.id == request.key_id]
    if not usable:
        named = f"key {request.key_id}" if request.key_id else "a proven key"
        raise Conflict(
            f"request {request.id} cannot be granted: the researcher has no longer {named} "
            "the policy accepts",
            hint="the researcher registers and proves a key, then makes a new request",
        )
    return usable[-1]  # proven_keys is oldest first


# --- withdrawing --------------------------------------------------------------------------------


def withdraw(uow: UnitOfWork, actor: Principal, request_id: str) -> AccessRequest:
    """The requester takes back a pending request: it leaves the reviewers' queue, can no longer
    be approved, and stays on the record as withdrawn. Only its requester may (403 for anyone
    else, reviewers included: they deny); a decided request is a conflict (409)."""
    user = _person(uow, actor, "request.withdraw")
    request = _request(uow, request_id, lock=True)  # a reviewer deciding now: one after the other
    authorize(actor, "request.withdraw", owner=str(request.user_id))
    if request.state != PENDING:
        message, hint = _not_withdrawable(uow, request)
        raise Conflict(message, hint=hint)
    request.state, request.decided_at = WITHDRAWN, now()
    uow.audit(
        "request.withdrawn",
        actor,
        {**audit_subject(user), **_request_subject(request)},
        {"model": request.deposit.model.full_name, "version": request.deposit.version},
    )
    uow.commit()
    return request


def _not_withdrawable(uow: UnitOfWork, request: AccessRequest) -> tuple[str, str]:
    """(what is wrong, what to do) for withdrawing a request that is no longer pending."""
    when = request.decided_at.isoformat(timespec="seconds") if request.decided_at else "?"
    again = "to ask again, make a new request (escrow request ORG/NAME@VERSION --purpose …)"
    if request.state == WITHDRAWN:
        return f"{_what(request)} was withdrawn already, at {when}", f"nothing to do; {again}"
    closed = (
        f"{_what(request)} was {request.state} at {when}: only a pending request can be withdrawn"
    )
    if request.state == APPROVED:
        grant = uow.session.scalar(select(Grant).where(Grant.request_id == request.id))
        org = request.deposit.model.organisation.name
        named = f"its grant {grant.id}" if grant else "its grant"
        return closed, (
            f"{named} ends at its expiry; if you no longer need it, ask a reviewer of {org} "
            "to revoke it"
        )
    return closed, f"it stays on the record; {again}"


# --- renewing ---------------------------------------------------------------------------------


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
    user = _person(uow, actor, "grant.renew")
    requested_days = _days(days)
    renewed = grant_service.grant_to_renew(uow, actor, grant_id)
    deposit = renewed.deposit
    policy = _policy_for(policy_dir, deposit)
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
    ask = _Ask(user, deposit, policy, key, text, requested_days, renews=renewed)
    return _record(uow, actor, policy_dir, ask)


def _renewal_key(uow: UnitOfWork, renewed: Grant) -> ResearcherKey:
    """The key the renewed grant is pinned to: a renewal continues access for the same key."""
    key = uow.session.get(ResearcherKey, renewed.key_id)
    if key is None or key.retired_at is not None or key.proven_at is None:
        raise Conflict(
            f"grant {renewed.id} cannot be renewed: its key {renewed.key_id} has been retired, "
            "and a renewal keeps the key of the grant it continues",
            hint="ask for access anew with a new request (escrow request), which pins your "
            "current key",
        )
    return key


# --- reviewing --------------------------------------------------------------------------------


def decide(
    uow: UnitOfWork,
    actor: Principal,
    policy_dir: Path,
    request_id: str,
    approve: bool,
    comment: object,
) -> tuple[AccessRequest, Decision]:
    """Add the actor's approval or denial and evaluate again; a satisfied policy makes the grant.

    A denial closes the request. Refused: reviewing one's own request, reviewing a closed request
    (409), a reviewer of another organisation (403), and a review that could not count under the
    policy (403, naming who can give one), so that a review never "succeeds" without effect.
    A reviewer may change their review while the request is pending (approval to denial, or the
    reverse): the newest counts, and the change is on the audit log; the same review twice is
    refused (409).
    """
    reviewer = _person(uow, actor, "review.decide")
    request = _request(uow, request_id, lock=True)  # two reviewers at once: one after the other
    org = request.deposit.model.organisation.name
    authorize(actor, "review.decide", org)
    if request.user_id == reviewer.id:
        raise Forbidden(
            f"request {request.id} is your own: nobody may review their own request",
            hint=f"another reviewer or admin of {org} decides it",
        )
    if request.state == WITHDRAWN:
        raise Conflict(
            f"request {request.id} was withdrawn by its researcher: there is nothing to decide",
            hint="it has left the review queue (escrow review list)",
        )
    if request.state != PENDING:
        raise Conflict(
            f"request {request.id} is {request.state} already: decisions are final",
            hint="a researcher whose request was denied may make a new request",
        )
    verb = "approval" if approve else "denial"
    reviews = _reviews(uow, request.id)
    mine = next((r for r in reviews if r.reviewer_id == reviewer.id), None)
    if mine is not None and mine.approve == approve:
        raise Conflict(
            f"you have {'approved' if approve else 'denied'} request {request.id} already",
            hint="it waits for the reviews of others"
            if approve
            else "nothing to do: the request is closed by your denial",
        )
    requester = uow.session.get(User, request.user_id)
    assert requester is not None  # a foreign key
    key = uow.session.get(ResearcherKey, request.key_id) if request.key_id else None
    if key is not None and (key.retired_at is not None or key.proven_at is None):
        key = None  # the key named is no longer usable; the policy will say a key is missing
    policy = _policy_for(policy_dir, request.deposit)
    others = [r for r in reviews if r.reviewer_id != reviewer.id]
    facts = gather_facts(
        uow, policy_dir, requester, request.deposit, request.days_requested, key, others
    )
    why_not = review_disqualified(policy, facts, _approval_fact(uow, org, reviewer.id, approve))
    if why_not is not None:
        raise Forbidden(
            f"your {verb} of request {request.id} would not count under policy {policy.id}: "
            f"{why_not.replace('they are', 'you are')}",
            hint=_who_can_review(uow, policy, facts, org, exclude=reviewer.id),
        )
    text = _comment(comment)
    changed_from = None
    if mine is not None:  # a change of mind while pending: the newest review counts
        changed_from = "approved" if mine.approve else "denied"
        mine.approve, mine.comment, mine.created_at = approve, text, now()
        review = mine
    else:
        review = Review(
            request_id=request.id,
            reviewer_id=reviewer.id,
            approve=approve,
            comment=text,
            created_at=now(),
        )
        uow.session.add(review)
    uow.session.flush()
    facts = gather_facts(
        uow, policy_dir, requester, request.deposit, request.days_requested, key, [*others, review]
    )
    if request.key_id and key is None:
        facts = replace(facts, keys=())
    decision = evaluate(policy, facts)
    grant = None
    if not approve:
        request.state, request.decided_at = DENIED, facts.now
    elif decision.allowed:
        grant = _grant(uow, request, policy, decision, facts)
        request.state, request.decided_at = APPROVED, facts.now
    request.policy_id, request.policy_sha256 = decision.policy_id, decision.policy_sha256
    request.decision = json.dumps(describe_decision(decision), sort_keys=True)
    details: dict[str, Any] = {"state": request.state, **_decision_log(decision, facts)}
    if changed_from is not None:
        details["changed_from"] = changed_from
    uow.audit(
        "review.approved" if approve else "review.denied",
        actor,
        {**audit_subject(reviewer), **_request_subject(request)},
        details,
    )
    if grant is not None:
        grant_service.audit_grant(uow, actor, requester, grant, decision)
    uow.commit()
    return request, decision


def _approval_fact(uow: UnitOfWork, org: str, user_id: int, approve: bool) -> ApprovalFact:
    """A review as the policy sees it: the reviewer's roles in `org`, and their organisations."""
    org_roles, _ = roles_of(uow, user_id)
    return ApprovalFact(
        reviewer_id=str(user_id),
        reviewer_roles=frozenset(r for o, r in org_roles if o == org),
        reviewer_orgs=frozenset(o for o, _ in org_roles),
        approve=approve,
    )


def _who_can_review(
    uow: UnitOfWork, policy: Policy, facts: Facts, org: str, *, exclude: int
) -> str:
    """Who could give a review that counts: the people of `org` whose review would qualify."""
    rule = policy.approvals
    roles = roles_counting_as(rule.role)
    where = f"{describe_role(rule.role)} of {org}"
    if not rule.allow_requester_org:
        where += " outside the researcher's organisations"
    candidates = uow.session.scalars(
        select(Membership.user_id)
        .join(Organisation, Organisation.id == Membership.org_id)
        .where(Organisation.name == org, Membership.role.in_(roles))
        .distinct()
    ).all()
    names = []
    for user_id in sorted(set(candidates)):
        if user_id == exclude:
            continue
        if review_disqualified(policy, facts, _approval_fact(uow, org, user_id, True)):
            continue
        user = uow.session.get(User, user_id)
        profile = user.profile if user is not None else None
        names.append((profile.email or profile.name) if profile else f"user {user_id}")
    if names:
        return f"policy {policy.id} counts reviews by {a(where)}: ask {', '.join(names)}"
    return (
        f"policy {policy.id} counts reviews by {a(where)}, and nobody holds that role yet: an "
        f"admin of {org} or an operator grants it: "
        f"escrow admin role grant USER {rule.role} --org {org}"
    )


def _comment(comment: object) -> str:
    if comment is None:
        return ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise InvalidInput(
            f"'comment' must be a text of at most {MAX_COMMENT} characters",
            hint='e.g. {"comment": "ok for the stated study"}',
        )
    return comment.strip()


def pending_reviews(uow: UnitOfWork, actor: Principal) -> tuple[list[str], list[AccessRequest]]:
    """(the organisations the actor reviews for, their pending requests, oldest first)."""
    _person(uow, actor, "request.create")
    orgs = sorted({o for o, r in actor.org_roles if r in REVIEWER_ROLES})
    if not orgs:
        return [], []
    requests = uow.session.scalars(
        select(AccessRequest)
        .join(Deposit, AccessRequest.deposit_id == Deposit.id)
        .join(Model, Deposit.model_id == Model.id)
        .join(Organisation, Model.org_id == Organisation.id)
        .where(AccessRequest.state == PENDING, Organisation.name.in_(orgs))
        .order_by(AccessRequest.created_at, AccessRequest.id)
    ).all()
    return orgs, list(requests)


def my_requests(uow: UnitOfWork, actor: Principal) -> list[AccessRequest]:
    user = _person(uow, actor, "request.create")
    return list(
        uow.session.scalars(
            select(AccessRequest)
            .where(AccessRequest.user_id == user.id)
            .order_by(AccessRequest.created_at, AccessRequest.id)
        )
    )


def visible_request(uow: UnitOfWork, actor: Principal, request_id: str) -> AccessRequest:
    """A request of the actor, or of an organisation the actor reviews for; else not found."""
    user = _person(uow, actor, "request.create")
    request = _request(uow, request_id)
    if request.user_id == user.id:
        return request
    authorize(actor, "review.read", request.deposit.model.organisation.name)
    return request


# --- describing -------------------------------------------------------------------------------


def describe_decision(decision: Decision) -> dict[str, Any]:
    return {
        "allowed": decision.allowed,
        "eligible": decision.eligible,
        "missing": list(decision.missing),
        "reasons": list(decision.reasons),
        "grant_days": decision.grant_days,
        "clamped": decision.clamped,
        "policy": {"id": decision.policy_id, "sha256": decision.policy_sha256},
    }


def outcome(
    uow: UnitOfWork,
    request: AccessRequest,
    *,
    for_reviewer: bool = False,
    policy_dir: Path | None = None,
) -> dict[str, Any]:
    """A request as described, and its grant if it has one."""
    described = describe_request(uow, request, for_reviewer=for_reviewer, policy_dir=policy_dir)
    result: dict[str, Any] = {"request": described}
    if described["grant_id"] is not None:  # loaded by describe_request: no second query
        grant = uow.session.get(Grant, described["grant_id"])
        result["grant"] = grant_service.describe(uow, grant)
    return result


def describe_request(
    uow: UnitOfWork,
    request: AccessRequest,
    *,
    for_reviewer: bool = False,
    policy_dir: Path | None = None,
) -> dict[str, Any]:
    deposit = request.deposit
    grant = uow.session.scalar(select(Grant).where(Grant.request_id == request.id))
    result: dict[str, Any] = {
        "id": request.id,
        "model": deposit.model.full_name,
        "version": deposit.version,
        "deposit_id": deposit.id,
        "state": request.state,
        "purpose": request.purpose,
        "days_requested": request.days_requested,
        "key_id": request.key_id,
        "policy": {"id": request.policy_id, "sha256": request.policy_sha256},
        "decision": json.loads(request.decision or "{}"),
        "created_at": request.created_at.isoformat(),
        "decided_at": request.decided_at.isoformat() if request.decided_at else None,
        "grant_id": grant.id if grant else None,
        "renews_grant_id": request.renews_grant_id,
        "reviews": [
            {
                "reviewer": str(r.reviewer_id),
                "approve": r.approve,
                "comment": r.comment,
                "created_at": r.created_at.isoformat(),
            }
            for r in _reviews(uow, request.id)
        ],
    }
    if for_reviewer:
        result["researcher"] = researcher_facts(uow, request, policy_dir)
        result["renews_grant"] = _renewed_summary(uow, request)
    return result


def _renewed_summary(uow: UnitOfWork, request: AccessRequest) -> dict[str, Any] | None:
    """What reviewers see of the grant a renewal continues: its period, state and key."""
    if request.renews_grant_id is None:
        return None
    renewed = uow.session.get(Grant, request.renews_grant_id)
    assert renewed is not None  # a foreign key
    described = grant_service.describe(uow, renewed)
    return {k: described[k] for k in ("id", "state", "not_before", "expires_at", "key_id")}


def researcher_facts(uow: UnitOfWork, request: AccessRequest, policy_dir: Path) -> dict[str, Any]:
    """What reviewers see of the requester: verified claims, NDA signatures, proven keys."""
    user = request.user
    profile = user.profile
    texts = ndas.library(policy_dir) if policy_dir is not None else None
    return {
        "user": str(user.id),
        "issuer": user.issuer,
        "email": profile.email if profile else None,
        "email_verified": bool(profile and profile.email_verified),
        "name": profile.name if profile else None,
        "affiliations": json.loads(profile.affiliations) if profile else [],
        "ndas": [
            {
                "nda": s.nda_id,
                "version": s.nda_version,
                "sha256": s.text_sha256,
                "signed_at": s.signed_at.isoformat(),
                "current_text": texts is not None and _signature_counts(texts, s),
            }
            for s in _signatures(uow, user.id)
        ],
        "keys": [
            {"id": k.id, "type": k.key_type, "fingerprint": fingerprint(k.recipient)}
            for k in proven_keys(uow, user.id)
        ],
    }


# --- helpers ----------------------------------------------------------------------------------


def _decision_log(decision: Decision, facts: Facts) -> dict[str, Any]:
    """The decision as it goes on the audit log: the policy and the reasons, with the
    requester's email address taken out should a reason quote it (no personal data there)."""
    return {
        "policy": decision.policy_id,
        "policy_sha256": decision.policy_sha256,
        "allowed": decision.allowed,
        "eligible": decision.eligible,
        "missing": [_scrub(m, facts) for m in decision.missing],
        "reasons": [_scrub(r, facts) for r in decision.reasons],
        "grant_days": decision.grant_days,
        "clamped": decision.clamped,
    }


def _scrub(text: str, facts: Facts) -> str:
    if facts.email:
        text = text.replace(facts.email, "<email>")
    return text


def _what(request: AccessRequest) -> str:
    """How a request is named to people: a renewal says which grant it renews."""
    if request.renews_grant_id:
        return f"renewal {request.id} of grant {request.renews_grant_id}"
    return f"request {request.id}"


def _request_subject(request: AccessRequest) -> dict[str, str]:
    """What an audit event about a request is about (ids only): the grant a renewal renews."""
    subject = {"request": request.id, "deposit": request.deposit_id}
    if request.renews_grant_id:
        subject["renews_grant"] = request.renews_grant_id
    return subject


def _reviews(uow: UnitOfWork, request_id: str) -> list[Review]:
    return list(
        uow.session.scalars(
            select(Review).where(Review.request_id == request_id).order_by(Review.id)
        )
    )


def _request(uow: UnitOfWork, request_id: str, *, lock: bool = False) -> AccessRequest:
    query = select(AccessRequest).where(AccessRequest.id == request_id)
    request = uow.session.scalar(query.with_for_update() if lock else query)
    if request is None:
        raise NotFound(
            f"request {request_id!r} does not exist",
            hint="list requests with `escrow review list` or `escrow requests`",
        )
    return request


def _person(uow: UnitOfWork, actor: Principal, action: str) -> User:
    """The person acting: requests and reviews are made by people (a review names its
    reviewer), never by service tokens."""
    if actor.kind != "user":
        raise Unauthorized(
            f"{action} is done by a person logged in, not by a service token",
            hint="log in (`escrow login BROKER`, or /auth/login in a browser)",
        )
    return _user(uow, actor)


def _user(uow: UnitOfWork, actor: Principal) -> User:
    user = uow.session.get(User, int(actor.id)) if actor.id.isdigit() else None
    if user is None:
        raise NotFound(f"user {actor.id} does not exist", hint="log in again")
    return user
