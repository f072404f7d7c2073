"""Requests as described to people and the API: a request, its decision, its grant, and what
reviewers see of the requester."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from broker.adapters.db.models import (
    AccessRequest,
    Grant,
)
from broker.adapters.db.uow import UnitOfWork
from broker.domain.access import Action, authorize
from broker.domain.principals import Principal
from broker.domain.states import RequestState
from broker.policy.facts import Decision
from broker.services import grants as grant_service
from broker.services import ndas
from broker.services.access.common import (
    find_request,
    person,
    reviews_of,
)
from broker.services.access.facts import (
    signature_counts,
    signatures,
)
from broker.services.keys import fingerprint, proven_keys
from broker.services.views_types import (
    DecisionView,
    RenewedGrant,
    RequestOutcome,
    RequestView,
    ResearcherFacts,
)


def describe_decision(decision: Decision) -> DecisionView:
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
) -> RequestOutcome:
    """A request as described, and its grant if it has one."""
    described = describe_request(uow, request, for_reviewer=for_reviewer, policy_dir=policy_dir)
    result: RequestOutcome = {"request": described}
    if described["grant_id"] is not None:  # loaded by describe_request: no second query
        grant = uow.session.get(Grant, described["grant_id"])
        assert grant is not None  # it was just found by describe_request
        result["grant"] = grant_service.describe(uow, grant)
    return result


def describe_request(
    uow: UnitOfWork,
    request: AccessRequest,
    *,
    for_reviewer: bool = False,
    policy_dir: Path | None = None,
) -> RequestView:
    deposit = request.deposit
    grant = uow.session.scalar(select(Grant).where(Grant.request_id == request.id))
    result: RequestView = {
        "id": request.id,
        "model": deposit.model.full_name,
        "version": deposit.version,
        "deposit_id": deposit.id,
        "state": RequestState(request.state),
        "purpose": request.purpose,
        "days_requested": request.days_requested,
        "key_id": request.key_id,
        "policy": {"id": request.policy_id, "sha256": request.policy_sha256},
        "decision": json.loads(request.decision or "{}"),
        "created_at": request.created_at.isoformat(),
        "decided_at": request.decided_at.isoformat() if request.decided_at else None,
        "grant_id": grant.id if grant else None,
        "renews_grant_id": request.renews_grant_id,
        "kind": request.kind,
        "reviews": [
            {
                "reviewer": str(r.reviewer_id),
                "approve": r.approve,
                "comment": r.comment,
                "created_at": r.created_at.isoformat(),
            }
            for r in reviews_of(uow, request.id)
        ],
    }
    if for_reviewer:
        result["researcher"] = researcher_facts(uow, request, policy_dir)
        result["renews_grant"] = _renewed_summary(uow, request)
    return result


def _renewed_summary(uow: UnitOfWork, request: AccessRequest) -> RenewedGrant | None:
    """What reviewers see of the grant a renewal continues: its period, state and key."""
    if request.renews_grant_id is None:
        return None
    renewed = uow.session.get(Grant, request.renews_grant_id)
    assert renewed is not None  # a foreign key
    described = grant_service.describe(uow, renewed)
    return {
        "id": described["id"],
        "state": described["state"],
        "not_before": described["not_before"],
        "expires_at": described["expires_at"],
        "key_id": described["key_id"],
    }


def researcher_facts(
    uow: UnitOfWork, request: AccessRequest, policy_dir: Path | None
) -> ResearcherFacts:
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
                "current_text": texts is not None and signature_counts(texts, s),
            }
            for s in signatures(uow, user.id)
        ],
        "keys": [
            {"id": k.id, "type": k.key_type, "fingerprint": fingerprint(k.recipient)}
            for k in proven_keys(uow, user.id)
        ],
    }


def my_requests(uow: UnitOfWork, actor: Principal) -> list[AccessRequest]:
    user = person(uow, actor, Action.REQUEST_CREATE)
    return list(
        uow.session.scalars(
            select(AccessRequest)
            .where(AccessRequest.user_id == user.id)
            .order_by(AccessRequest.created_at, AccessRequest.id)
        )
    )


def visible_request(uow: UnitOfWork, actor: Principal, request_id: str) -> AccessRequest:
    """A request of the actor, or of an organisation the actor reviews for; else not found."""
    user = person(uow, actor, Action.REQUEST_CREATE)
    request = find_request(uow, request_id)
    if request.user_id == user.id:
        return request
    authorize(actor, Action.REVIEW_READ, request.deposit.model.organisation.name)
    return request
