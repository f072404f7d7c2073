"""The grant of an allowed request (first request or renewal): its period and the key it is pinned
to. Called by `requests` (allowed at once) and `reviews` (allowed by a review)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from broker.adapters.db.models import (
    AccessRequest,
    Grant,
    ResearcherKey,
)
from broker.adapters.db.uow import UnitOfWork
from broker.domain.hosting import QUERYING_KINDS, RELEASING_KINDS
from broker.errors import Conflict
from broker.policy.facts import Decision, Facts
from broker.policy.schema import Policy
from broker.services import grants as grant_service
from broker.services.access.facts import (
    POST_QUANTUM_TYPES,
)
from broker.services.grants import renewal_start
from broker.services.keys import proven_keys


def grant_for(
    uow: UnitOfWork, request: AccessRequest, policy: Policy, decision: Decision, facts: Facts
) -> Grant:
    """The grant of an allowed request: from now for the decided days (never beyond the
    policy's longest). A weights grant is pinned now to the researcher's key: the key the
    request named, else their newest proven key that the policy accepts (keys registered later
    get nothing of it). A grant of hosted access (inference, internals) releases no file key,
    so it is pinned to none, even when the researcher has keys."""
    key = _pinned_key(uow, request, policy) if request.kind in RELEASING_KINDS else None
    days = min(decision.grant_days, policy.grant.max_days)
    start = facts.now
    if request.renews_grant_id is not None:
        start = renewal_start(_renewed_grant(uow, request), facts.now)
    grant = grant_service.create_grant(
        uow,
        request,
        key,
        not_before=start,
        expires_at=start + timedelta(days=days),
        releases_per_file=policy.grant.releases_per_file,
        kind=request.kind,
    )
    if request.kind in QUERYING_KINDS:  # the quotas of hosted access (weights grants have none)
        grant.requests_per_minute = policy.grant.requests_per_minute
        grant.tokens_per_day = policy.grant.tokens_per_day
    return grant


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
