"""The facts a policy decides on, gathered from the database, and the policy that matches a model.

The policy itself is a pure function of `Facts` (`broker.policy.evaluate`); this is the only place
that reads the requester's claims, NDA signatures, proven keys and reviews to build them."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from broker.adapters.db.models import (
    Deposit,
    NdaSignature,
    ResearcherKey,
    Review,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.domain.clock import now
from broker.errors import InvalidInput, NotFound
from broker.policy.facts import ApprovalFact, Facts, KeyFact
from broker.policy.loader import PolicyLibrary
from broker.policy.schema import Policy
from broker.services import agreements, closeouts, ndas
from broker.services.keys import proven_keys
from broker.services.people import roles_of

POST_QUANTUM_TYPES = frozenset({"mlkem768x25519"})


def match_policy(policy_dir: Path, model: str) -> Policy | None:
    """The policy for `model` as the files are now (policies reload without a restart)."""
    return _library(Path(policy_dir)).match(model)


@functools.lru_cache(maxsize=8)
def _library(policy_dir: Path) -> PolicyLibrary:
    return PolicyLibrary(policy_dir)  # re-reads the files when they change; thread-safe


def policy_for(policy_dir: Path, deposit: Deposit) -> Policy:
    """The one place a deposit's policy is chosen: what its release agreement unlocked, once a
    trigger fired; else the policy matching the model."""
    unlocked = agreements.unlocked_policy(policy_dir, deposit)
    if unlocked is not None:
        return unlocked
    name = deposit.model.full_name
    policy = match_policy(policy_dir, name)
    if policy is None:
        raise InvalidInput(
            f"no policy matches {name}: nothing can be requested for it",
            hint=f"the reviewers of {deposit.model.organisation.name} publish an access policy "
            "for the model first (a file in the broker's policies/)",
        )
    return policy


def gather_facts(
    uow: UnitOfWork,
    policy_dir: Path,
    user: User,
    deposit: Deposit,
    requested_days: int | None,
    key: ResearcherKey | None,
    reviews: list[Review],
    kind: str = "weights",
) -> Facts:
    """What the policy decides on, from the database: trusted claims (kept at login, only those
    the issuer is authoritative for), organisations, NDA texts signed (a signature counts only
    while its exact text is still the one in policies/ndas/), proven keys (only `key` when the
    request names one), the requested duration, the reviews so far, and when each of the
    requester's ended grants still waiting for its close-out ended."""
    profile = user.profile
    org_roles, _ = roles_of(uow, user.id)
    org = deposit.model.organisation.name
    approvals = [approval_fact(uow, org, r.reviewer_id, r.approve) for r in reviews]
    keys = [key] if key is not None else proven_keys(uow, user.id)
    moment = now()
    return Facts(
        model=deposit.model.full_name,
        now=moment,
        requester_id=str(user.id),
        email=profile.email if profile else None,
        email_verified=bool(profile and profile.email_verified),
        affiliations=tuple(json.loads(profile.affiliations)) if profile else (),
        requester_orgs=frozenset(o for o, _ in org_roles),
        signed_ndas=signed_ndas(uow, policy_dir, user.id),
        keys=tuple(key_fact(k) for k in keys),
        requested_days=requested_days,
        approvals=tuple(approvals),
        closeouts_due=closeouts.due_closeouts(uow, user.id, moment),
        kind=kind,
    )


def approval_fact(uow: UnitOfWork, org: str, user_id: int, approve: bool) -> ApprovalFact:
    """A review as the policy sees it: the reviewer's roles in `org`, and their organisations."""
    org_roles, _ = roles_of(uow, user_id)
    return ApprovalFact(
        reviewer_id=str(user_id),
        reviewer_roles=frozenset(r for o, r in org_roles if o == org),
        reviewer_orgs=frozenset(o for o, _ in org_roles),
        approve=approve,
    )


def key_fact(key: ResearcherKey) -> KeyFact:
    return KeyFact(key.id, key.key_type, key.key_type in POST_QUANTUM_TYPES)


def signed_ndas(uow: UnitOfWork, policy_dir: Path, user_id: int) -> dict[str, tuple[str, ...]]:
    texts = ndas.library(policy_dir)
    result: dict[str, list[str]] = {}
    for signature in signatures(uow, user_id):
        if signature_counts(texts, signature):
            result.setdefault(signature.nda_id, []).append(signature.nda_version)
    return {nda_id: tuple(versions) for nda_id, versions in result.items()}


def signatures(uow: UnitOfWork, user_id: int) -> list[NdaSignature]:
    return list(
        uow.session.scalars(
            select(NdaSignature)
            .where(NdaSignature.user_id == user_id)
            .order_by(NdaSignature.signed_at)
        )
    )


def signature_counts(texts: Any, signature: NdaSignature) -> bool:
    try:
        return texts.get(signature.nda_id, signature.nda_version).sha256 == signature.text_sha256
    except NotFound:
        return False
