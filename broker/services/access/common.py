"""What the parts of the access service share: request states, the refusal, finding a request
and the person acting, and how requests and decisions are named on the audit log."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from broker.adapters.db.models import (
    AccessRequest,
    Review,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.domain.access import Action
from broker.domain.principals import Principal, PrincipalKind
from broker.domain.states import RequestState
from broker.errors import InvalidInput, NotFound, Unauthorized
from broker.policy.facts import Decision, Facts

PENDING, APPROVED, DENIED, WITHDRAWN = (
    RequestState.PENDING,
    RequestState.APPROVED,
    RequestState.DENIED,
    RequestState.WITHDRAWN,
)

REVIEWER_ROLES = ("reviewer", "admin")


class RequestRefused(InvalidInput):
    """The requester does not meet the policy; the request is on the record as denied."""

    title = "request refused"

    def __init__(self, message: str, *, hint: str, request: AccessRequest, decision: Decision):
        super().__init__(message, hint=hint)
        self.request = request
        self.decision = decision


def state_of(decision: Decision) -> RequestState:
    if decision.allowed:
        return APPROVED
    return PENDING if decision.eligible else DENIED


def decision_log(decision: Decision, facts: Facts) -> dict[str, Any]:
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


def request_name(request: AccessRequest) -> str:
    """How a request is named to people: a renewal says which grant it renews."""
    if request.renews_grant_id:
        return f"renewal {request.id} of grant {request.renews_grant_id}"
    return f"request {request.id}"


def request_subject(request: AccessRequest) -> dict[str, str]:
    """What an audit event about a request is about (ids only): the grant a renewal renews."""
    subject = {"request": request.id, "deposit": request.deposit_id}
    if request.renews_grant_id:
        subject["renews_grant"] = request.renews_grant_id
    return subject


def reviews_of(uow: UnitOfWork, request_id: str) -> list[Review]:
    return list(
        uow.session.scalars(
            select(Review).where(Review.request_id == request_id).order_by(Review.id)
        )
    )


def find_request(uow: UnitOfWork, request_id: str, *, lock: bool = False) -> AccessRequest:
    query = select(AccessRequest).where(AccessRequest.id == request_id)
    request = uow.session.scalar(query.with_for_update() if lock else query)
    if request is None:
        raise NotFound(
            f"request {request_id!r} does not exist",
            hint="list requests with `escrow review list` or `escrow requests`",
        )
    return request


def person(uow: UnitOfWork, actor: Principal, action: Action) -> User:
    """The person acting: requests and reviews are made by people (a review names its
    reviewer), never by service tokens."""
    if actor.kind != PrincipalKind.USER:
        raise Unauthorized(
            f"{action} is done by a person logged in, not by a service token",
            hint="log in (`escrow login BROKER`, or /auth/login in a browser)",
        )
    return user_of(uow, actor)


def user_of(uow: UnitOfWork, actor: Principal) -> User:
    user = uow.session.get(User, int(actor.id)) if actor.id.isdigit() else None
    if user is None:
        raise NotFound(f"user {actor.id} does not exist", hint="log in again")
    return user
