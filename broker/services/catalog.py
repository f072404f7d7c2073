"""The public catalogue: every escrowed model version, with its access policy in words.

Public on purpose: a researcher should see what is held, and on which terms, before logging in.
Only sealed versions are listed (an open, verifying or failed deposit is not escrowed yet), and
nothing about who asked for what. Both `GET /api/v1/models` and the home page read this.

Also the lab's own view of its deposits, every state included (`org_deposits`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from broker.adapters.db.models import Deposit, DepositFile, Model, Organisation
from broker.adapters.db.uow import UnitOfWork
from broker.domain.access import Action, authorize
from broker.domain.hosting import INFERENCE, INTERNALS, QUERYING_KINDS, WEIGHTS
from broker.domain.principals import Principal
from broker.domain.states import FileState
from broker.errors import ConfigError
from broker.policy.schema import Policy
from broker.services.access import match_policy
from broker.services.admin import get_org
from broker.services.deposits import SEALED
from broker.services.views_types import CatalogModel, CatalogVersion, PolicyView

POLICY_BROKEN = (
    "the access policies are being corrected by the operators; no request can be decided "
    "until they are"
)


def list_models(uow: UnitOfWork, policy_dir: Path) -> list[CatalogModel]:
    """Each model with at least one sealed version: its versions (oldest first), their sizes and
    dates, and the policy that decides requests for it (None when no policy matches)."""
    deposits = uow.session.scalars(
        select(Deposit)
        .join(Model, Deposit.model_id == Model.id)
        .join(Organisation, Model.org_id == Organisation.id)
        .where(Deposit.state == SEALED)
        .order_by(Organisation.name, Model.name, Deposit.sealed_at, Deposit.version)
    ).all()
    sizes = _sizes(uow, [d.id for d in deposits])
    by_model: dict[str, list[Deposit]] = defaultdict(list)
    for deposit in deposits:
        by_model[deposit.model.full_name].append(deposit)
    return [
        _model_entry(name, found, sizes, policy_dir) for name, found in by_model.items()
    ]


def org_deposits(uow: UnitOfWork, actor: Principal, org: str) -> list[dict[str, Any]]:
    """Every deposit of an organisation, newest first, with its verification state (for the
    organisation's depositors, reviewers and admins)."""
    authorize(actor, Action.DEPOSIT_READ, org)
    organisation = get_org(uow, org)
    deposits = uow.session.scalars(
        select(Deposit)
        .join(Model, Deposit.model_id == Model.id)
        .where(Model.org_id == organisation.id)
        .order_by(Deposit.created_at.desc(), Deposit.id)
    ).all()
    sizes = _sizes(uow, [d.id for d in deposits])
    return [
        {
            **_version_entry(d, sizes),
            "model": d.model.full_name,
            "state": d.state,
            "created_at": _iso(d.created_at),
            "failure": d.failure,
            "files_verified": sum(1 for f in d.files if f.state == FileState.VERIFIED),
        }
        for d in deposits
    ]


def _sizes(uow: UnitOfWork, deposit_ids: list[str]) -> dict[str, tuple[int, int]]:
    """deposit id -> (total plaintext bytes, number of files), in one query."""
    if not deposit_ids:
        return {}
    rows = uow.session.execute(
        select(DepositFile.deposit_id, func.sum(DepositFile.size), func.count())
        .where(DepositFile.deposit_id.in_(deposit_ids))
        .group_by(DepositFile.deposit_id)
    ).all()
    return {deposit_id: (int(size or 0), int(count)) for deposit_id, size, count in rows}


def _model_entry(
    name: str, deposits: list[Deposit], sizes: dict[str, tuple[int, int]], policy_dir: Path
) -> CatalogModel:
    model = deposits[0].model
    policy, problem = _policy(policy_dir, name)
    return {
        "name": name,
        "organisation": model.organisation.name,
        "model": model.name,
        "versions": [_version_entry(d, sizes) for d in deposits],
        "policy": describe_policy(policy) if policy else None,
        "policy_problem": problem,
    }


def _version_entry(deposit: Deposit, sizes: dict[str, tuple[int, int]]) -> CatalogVersion:
    size, files = sizes.get(deposit.id, (0, 0))
    return {
        "version": deposit.version,
        "deposit_id": deposit.id,
        "size": size,
        "files": files,
        "encryption": "post-quantum hybrid" if not deposit.classical else "classical X25519",
        "sealed_at": _iso(deposit.sealed_at),
        "last_verified_at": _iso(deposit.last_verified_at),
        "quarantined_at": _iso(deposit.quarantined_at),
    }


def _policy(policy_dir: Path, name: str) -> tuple[Policy | None, str | None]:
    """(the policy, None), (None, None) when none matches, or (None, why) when the policy
    directory is broken: the public list must still show what is held."""
    try:
        return match_policy(policy_dir, name), None
    except ConfigError:
        return None, POLICY_BROKEN


def policy_of(policy_dir: Path, model: str) -> PolicyView | None:
    """The policy deciding requests for `model`, described; None when none matches (a broken
    policy directory raises, as a request would)."""
    policy = match_policy(policy_dir, model)
    return describe_policy(policy) if policy else None


# --- a policy, in words ---------------------------------------------------------------------


def describe_policy(policy: Policy) -> PolicyView:
    """The terms a researcher must meet, as data and as sentences (`summary`)."""
    return {
        "id": policy.id,
        "sha256": policy.sha256,
        "description": policy.description,
        "nda": {"id": policy.nda.id, "min_version": policy.nda.min_version}
        if policy.nda
        else None,
        "eligibility": {
            "verified_email": policy.eligibility.verified_email,
            "email_domains": list(policy.eligibility.email_domains),
            "affiliations": list(policy.eligibility.affiliations),
            "proven_key": policy.eligibility.proven_key,
            "post_quantum_key": policy.require_post_quantum_key,
        },
        "approvals": {
            "count": policy.approvals.count,
            "role": policy.approvals.role,
            "auto": policy.approvals.auto,
            "allow_requester_org": policy.approvals.allow_requester_org,
        },
        "grant": {
            "default_days": policy.grant.default_days,
            "max_days": policy.grant.max_days,
            "releases_per_file": policy.grant.releases_per_file,
            "renewal": policy.grant.renewal,
        },
        "embargo_until": policy.embargo_until.isoformat() if policy.embargo_until else None,
        "access": list(policy.access),
        "summary": policy_words(policy),
    }


def policy_words(policy: Policy) -> list[str]:
    """One sentence per requirement, in the order a researcher meets them."""
    words = [_nda_words(policy), *_eligibility_words(policy), _approval_words(policy)]
    grant = policy.grant
    words.append(
        f"Access lasts {_days(grant.default_days)} unless asked otherwise, "
        f"{_days(grant.max_days)} at most"
        + ("; it can be renewed." if grant.renewal else "; it is not renewable.")
    )
    if WEIGHTS in policy.access:
        words.append(
            f"Each file's key can be released {_times(grant.releases_per_file)} per grant."
        )
    if policy.access != (WEIGHTS,):
        words.append(_access_words(policy))
    if policy.embargo_until:
        words.append(f"No access before {policy.embargo_until.isoformat()} (an embargo).")
    return words


def _access_words(policy: Policy) -> str:
    """The kinds of access the policy allows, for a policy that allows more than weights."""
    meaning = {
        WEIGHTS: "weights (file keys released to your key)",
        INFERENCE: "inference (querying the hosted model through /v1; no weights leave)",
        INTERNALS: "internals (inference with token log-probabilities)",
    }
    words = "Kinds of access: " + "; ".join(meaning.get(k, k) for k in policy.access) + "."
    limits = [f"{n} {what}" for n, what in ((policy.grant.requests_per_minute, "requests per "
              "minute"), (policy.grant.tokens_per_day, "tokens per day")) if n is not None]
    if limits and any(k in QUERYING_KINDS for k in policy.access):
        words += f" Hosted access is limited to {' and '.join(limits)}."
    return words


def _nda_words(policy: Policy) -> str:
    if policy.nda is None:
        return "No NDA to sign."
    return f"Sign the NDA {policy.nda.id} (version {policy.nda.min_version} or later)."


def _eligibility_words(policy: Policy) -> list[str]:
    rules = policy.eligibility
    words = []
    if rules.verified_email:
        where = f" at {_either(rules.email_domains)}" if rules.email_domains else ""
        words.append(f"An email address{where} verified by your institution's login.")
    elif rules.email_domains:
        words.append(f"An email address at {_either(rules.email_domains)}.")
    if rules.affiliations:
        words.append(f"An affiliation vouched for by your institution: "
                     f"{_either(rules.affiliations)}.")
    if rules.proven_key or policy.require_post_quantum_key:
        kind = "post-quantum (age1pq1…) " if policy.require_post_quantum_key else ""
        hosted = [k for k in policy.access if k in QUERYING_KINDS]
        # the key is the one file keys are released to: hosted access needs none
        scope = f" (for weights; {' and '.join(hosted)} access needs no key)" if hosted else ""
        words.append(f"A registered {kind}key that you have proven you hold{scope}.")
    return words


def _approval_words(policy: Policy) -> str:
    rules = policy.approvals
    if rules.auto:
        return "Approved automatically once everything above is met."
    who = f"a {rules.role}" if rules.count == 1 else f"{rules.count} {rules.role}s"
    outside = "" if rules.allow_requester_org else ", none from your own organisation"
    return f"Approved by {who} of {policy.organisation}{outside}."


def _either(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None
