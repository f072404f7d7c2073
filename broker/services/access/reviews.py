"""Reviewing requests: an approval or a denial, evaluated again; the reviewers' queue."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import select

from broker.adapters.db.models import (
    AccessRequest,
    Deposit,
    Grant,
    Membership,
    Model,
    Organisation,
    ResearcherKey,
    Review,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import Principal, roles_counting_as
from broker.errors import Conflict, Forbidden, InvalidInput
from broker.policy.evaluate import a, describe_role, evaluate, review_disqualified
from broker.policy.facts import Decision, Facts
from broker.policy.schema import Policy
from broker.services import grants as grant_service
from broker.services import notifications
from broker.services.access.common import (
    APPROVED,
    DENIED,
    PENDING,
    REVIEWER_ROLES,
    WITHDRAWN,
    decision_log,
    find_request,
    person,
    request_subject,
    reviews_of,
)
from broker.services.access.facts import (
    approval_fact,
    gather_facts,
    policy_for,
)
from broker.services.access.granting import grant_for
from broker.services.access.views import describe_decision
from broker.services.people import audit_subject

MAX_COMMENT = 2000


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
    reviewer = person(uow, actor, Action.REVIEW_DECIDE)
    request = find_request(uow, request_id, lock=True)  # two reviewers at once: one after the other
    org = request.deposit.model.organisation.name
    authorize(actor, Action.REVIEW_DECIDE, org)
    _refuse_undecidable(request, reviewer, org)
    reviews = reviews_of(uow, request.id)
    mine = next((r for r in reviews if r.reviewer_id == reviewer.id), None)
    _refuse_same_review(request, mine, approve)
    requester = uow.session.get(User, request.user_id)
    assert requester is not None  # a foreign key
    key = _usable_key(uow, request)
    policy = policy_for(policy_dir, request.deposit)
    others = [r for r in reviews if r.reviewer_id != reviewer.id]
    facts = gather_facts(
        uow, policy_dir, requester, request.deposit, request.days_requested, key, others,
        request.kind,
    )
    _refuse_not_counting(uow, policy, facts, request, reviewer.id, approve)
    review, changed_from = _write_review(uow, request, reviewer, mine, approve, _comment(comment))
    facts = gather_facts(
        uow, policy_dir, requester, request.deposit, request.days_requested, key,
        [*others, review], request.kind,
    )
    if request.key_id and key is None:
        facts = replace(facts, keys=())
    decision = evaluate(policy, facts)
    grant = _conclude(uow, request, policy, decision, facts, approve)
    _audit_review(uow, actor, reviewer, request, approve, changed_from, decision, facts)
    if grant is not None:
        grant_service.audit_grant(uow, actor, requester, grant, decision)
    if request.state != PENDING:
        notifications.request_decided(uow, request, grant)
    uow.commit()
    return request, decision


def _refuse_same_review(request: AccessRequest, mine: Review | None, approve: bool) -> None:
    """Refuse the reviewer's own review given again (409): a changed review is allowed."""
    if mine is not None and mine.approve == approve:
        raise Conflict(
            f"you have {'approved' if approve else 'denied'} request {request.id} already",
            hint="it waits for the reviews of others"
            if approve
            else "nothing to do: the request is closed by your denial",
        )


def _audit_review(
    uow: UnitOfWork,
    actor: Principal,
    reviewer: User,
    request: AccessRequest,
    approve: bool,
    changed_from: str | None,
    decision: Decision,
    facts: Facts,
) -> None:
    """The `review.approved` or `review.denied` event: the request's state after it, the
    decision, and the review it replaced."""
    details: dict[str, Any] = {"state": request.state, **decision_log(decision, facts)}
    if changed_from is not None:
        details["changed_from"] = changed_from
    uow.audit(
        AuditAction.REVIEW_APPROVED if approve else AuditAction.REVIEW_DENIED,
        actor,
        {**audit_subject(reviewer), **request_subject(request)},
        details,
    )


def _refuse_undecidable(request: AccessRequest, reviewer: User, org: str) -> None:
    """Refuse reviewing one's own request (403) and a request no longer pending (409)."""
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


def _usable_key(uow: UnitOfWork, request: AccessRequest) -> ResearcherKey | None:
    """The key the request named, while it is still proven and unretired."""
    key = uow.session.get(ResearcherKey, request.key_id) if request.key_id else None
    if key is not None and (key.retired_at is not None or key.proven_at is None):
        key = None  # the key named is no longer usable; the policy will say a key is missing
    return key


def _refuse_not_counting(
    uow: UnitOfWork,
    policy: Policy,
    facts: Facts,
    request: AccessRequest,
    reviewer_id: int,
    approve: bool,
) -> None:
    """Refuse (403) a review that would not count under the policy, naming who can give one."""
    org = request.deposit.model.organisation.name
    why_not = review_disqualified(policy, facts, approval_fact(uow, org, reviewer_id, approve))
    if why_not is not None:
        verb = "approval" if approve else "denial"
        raise Forbidden(
            f"your {verb} of request {request.id} would not count under policy {policy.id}: "
            f"{why_not.replace('they are', 'you are')}",
            hint=_who_can_review(uow, policy, facts, org, exclude=reviewer_id),
        )


def _write_review(
    uow: UnitOfWork,
    request: AccessRequest,
    reviewer: User,
    mine: Review | None,
    approve: bool,
    text: str,
) -> tuple[Review, str | None]:
    """(the reviewer's review, written, and what it was before when they changed their mind)."""
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
    return review, changed_from


def _conclude(
    uow: UnitOfWork,
    request: AccessRequest,
    policy: Policy,
    decision: Decision,
    facts: Facts,
    approve: bool,
) -> Grant | None:
    """Store the decision on the request: a denial closes it, a satisfied policy grants."""
    grant = None
    if not approve:
        request.state, request.decided_at = DENIED, facts.now
    elif decision.allowed:
        grant = grant_for(uow, request, policy, decision, facts)
        request.state, request.decided_at = APPROVED, facts.now
    request.policy_id, request.policy_sha256 = decision.policy_id, decision.policy_sha256
    request.decision = json.dumps(describe_decision(decision), sort_keys=True)
    return grant


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
        if review_disqualified(policy, facts, approval_fact(uow, org, user_id, True)):
            continue
        user = uow.session.get(User, user_id)
        profile = user.profile if user is not None else None
        name = (profile.email or profile.name) if profile else None
        names.append(name or f"user {user_id}")
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
    person(uow, actor, Action.REQUEST_CREATE)
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
