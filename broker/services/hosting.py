"""Hosting: model workers' accounts, their hosting grants, and the registry of live workers.

A model worker is its own principal: a person account of the issuer `escrow:model-worker`
(the operator makes it at the console with the worker's recipient, read from the worker's own
identity file), logged in like anyone with `escrow login`'s stored credentials. To host a
version it needs a grant of kind `hosting`, made by the operator (`escrow hosted allow`) under
the version's access policy: only where the policy allows a hosted kind (`inference` or
`internals` in its `access`) has the lab agreed that its model is run by the escrow, and the grant
names that policy and its SHA-256 on the log. Which worker runs it, and for how long, is the
operator's call; every key the worker obtains is a key release on the audit log, through the
same path as a researcher's.

A worker registers (under its hosting grant, active and not quarantined) with its loopback URL
and gets a worker id and a secret; it heartbeats with them, and the broker sends the secret on
every call it forwards, so that nothing else can call the worker. Loading is audited
(`model_worker.loaded`), and a clean stop (`model_worker.stopped`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select

from broker import age
from broker.adapters.db.models import (
    AccessRequest,
    Deposit,
    Grant,
    ModelWorker,
    ResearcherKey,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.hosting import HEARTBEAT_S, HOSTING, QUERYING_KINDS
from broker.domain.principals import Principal, PrincipalKind
from broker.domain.states import RequestState
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from broker.services import grants as grant_service
from broker.services import people, sessions
from broker.services.access.facts import policy_for
from broker.services.access.requests import find_sealed_deposit
from broker.services.grants import refusal
from broker.services.keys import canonical_recipient, fingerprint, parse_key
from broker.services.quarantine import refusal as quarantine_refusal
from broker.services.views_types import WorkerHeartbeat, WorkerRegistration, WorkerStopped

WORKER_ISSUER = "escrow:model-worker"
HOSTING_DAYS = 365  # a hosting grant's default length; the operator revokes it to stop hosting
HOSTING_RELEASES = 1000  # key releases per file: one per worker start


@dataclass(frozen=True)
class _HostingDecision:
    """What `grants.audit_grant` records of a hosting grant: the policy that allows hosting."""

    policy_id: str
    policy_sha256: str


# --- the operator's side ------------------------------------------------------------------------


def create_worker_account(
    uow: UnitOfWork, actor: Principal, name: str, recipient_text: str
) -> tuple[User, ResearcherKey]:
    """The account of model worker `name` and its key (the recipient of the worker's own
    identity file; the console read that file, so the key counts as proven)."""
    authorize(actor, Action.HOSTING_MANAGE)
    if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
        raise InvalidInput(
            f"worker name {name!r} is not valid",
            hint="use letters, digits, '-' or '_', e.g. gpu-host-1",
        )
    user = people.upsert_user(
        uow, actor, WORKER_ISSUER, name, people.Claims(name=f"model worker {name}")
    )
    recipient, key_type = parse_key(recipient_text)
    stored = canonical_recipient(recipient)
    key = uow.session.scalar(
        select(ResearcherKey).where(
            ResearcherKey.user_id == user.id,
            ResearcherKey.recipient == stored,
            ResearcherKey.retired_at.is_(None),
        )
    )
    if key is None:
        moment = now()
        key = ResearcherKey(
            id="rk_" + secrets.token_hex(8), user_id=user.id, recipient=stored,
            key_type=key_type, label=f"model worker {name}", created_at=moment,
            proven_at=moment,
        )
        uow.session.add(key)
        uow.session.flush()
        uow.audit(
            AuditAction.KEY_REGISTERED,
            actor,
            {**people.audit_subject(user), "key": key.id},
            {"type": key_type, "fingerprint": fingerprint(stored), "proven_at": "console"},
        )
    return user, key


def create_worker_login(
    uow: UnitOfWork, actor: Principal, name: str, recipient_text: str
) -> tuple[User, ResearcherKey, sessions.TokenPair]:
    """The worker's account and key (`create_worker_account`) and a login for it (a `worker`
    session, as long as a hosting grant; its tokens refreshed by the worker like `escrow
    login`'s): its tokens, committed."""
    user, key = create_worker_account(uow, actor, name, recipient_text)
    session = sessions.start_session(uow, user, "worker", WORKER_ISSUER, now())
    pair = sessions.issue_tokens(uow, session)
    uow.commit()
    return user, key, pair


def worker_account(uow: UnitOfWork, name: str) -> User:
    user = people.find_user(uow, WORKER_ISSUER, name)
    if user is None:
        raise NotFound(
            f"there is no model worker {name!r}",
            hint="make it first: escrow hosted worker create NAME --identity FILE",
        )
    return user


def allow_hosting(
    uow: UnitOfWork, actor: Principal, policy_dir: Path, model: str, version: str, worker: str,
    days: int = HOSTING_DAYS,
) -> Grant:
    """A hosting grant of version model@version to model worker `worker`, pinned to its newest
    key, where the version's policy allows hosted access: the worker obtains the version's
    file keys under it, each release on the log."""
    authorize(actor, Action.HOSTING_MANAGE)
    deposit = find_sealed_deposit(uow, model, version)
    policy = policy_for(policy_dir, deposit)
    if not set(policy.access) & set(QUERYING_KINDS):
        raise Forbidden(
            f"the access policy of {model} ({policy.id}) allows no hosted access (access: "
            f"[{', '.join(policy.access)}]): its lab has not agreed to its being hosted",
            hint="the lab adds inference (or internals) to the policy's access list; then "
            "allow hosting again",
        )
    user = worker_account(uow, worker)
    keys = uow.session.scalars(
        select(ResearcherKey)
        .where(ResearcherKey.user_id == user.id, ResearcherKey.retired_at.is_(None),
               ResearcherKey.proven_at.is_not(None))
        .order_by(ResearcherKey.created_at)
    ).all()
    if not keys:
        raise Conflict(
            f"model worker {worker} has no key",
            hint="escrow hosted worker create NAME --identity FILE registers it",
        )
    moment = now()
    request = AccessRequest(
        id="rq_" + secrets.token_hex(8), user_id=user.id, deposit_id=deposit.id,
        key_id=keys[-1].id, purpose=f"hosting by model worker {worker}", days_requested=days,
        state=RequestState.APPROVED, policy_id=policy.id, created_at=moment, decided_at=moment,
        kind=HOSTING,
    )
    uow.session.add(request)
    uow.session.flush()
    grant = grant_service.create_grant(
        uow, request, keys[-1], not_before=moment, expires_at=moment + timedelta(days=days),
        releases_per_file=HOSTING_RELEASES, kind=HOSTING,
    )
    grant_service.audit_grant(uow, actor, user, grant,
                              _HostingDecision(policy.id, policy.sha256))
    uow.commit()
    return grant


# --- the worker's side --------------------------------------------------------------------------


def register(
    uow: UnitOfWork, key: bytes, actor: Principal, grant_id: object, url: object
) -> WorkerRegistration:
    """A worker that has loaded the version of its hosting grant, serving on `url` (loopback
    or a private address the broker reaches): audited as model_worker.loaded."""
    authorize(actor, Action.HOSTING_REGISTER)
    if not isinstance(grant_id, str) or not isinstance(url, str):
        raise InvalidInput("'grant_id' and 'url' are required", hint="the worker sends them")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"worker URL {url!r} is not an http(s) URL", hint="http://HOST:PORT")
    grant = uow.session.get(Grant, grant_id)
    if grant is None or str(grant.user_id) != actor.id or grant.kind != HOSTING:
        raise NotFound(
            f"you have no hosting grant {grant_id}",
            hint="the operator makes one: escrow hosted allow ORG/MODEL@VERSION --worker NAME",
        )
    _refuse_inactive(grant)
    moment = now()
    worker = ModelWorker(
        id="mw_" + secrets.token_hex(8), deposit_id=grant.deposit_id, grant_id=grant.id,
        url=url.rstrip("/"), registered_at=moment, heartbeat_at=moment,
    )
    uow.session.add(worker)
    uow.session.flush()
    deposit = grant.deposit
    uow.audit(
        AuditAction.MODEL_WORKER_LOADED,
        actor,
        {"worker": worker.id, "grant": grant.id, "deposit": deposit.id,
         "model": deposit.model.full_name, "version": deposit.version},
        {"url_sha256": hashlib.sha256(worker.url.encode()).hexdigest()},
    )
    uow.commit()
    return {"worker_id": worker.id, "secret": worker_secret(key, worker.id),
            "heartbeat_s": HEARTBEAT_S}


def worker_secret(key: bytes, worker_id: str) -> str:
    """The secret a worker and the broker share: an HMAC of the worker's id under the
    deployment's worker key (`Escrow.worker_key`), so no database row holds it."""
    digest = hmac.digest(key, b"model worker " + worker_id.encode("ascii"), "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def heartbeat(
    uow: UnitOfWork, key: bytes, worker_id: str, secret: str | None
) -> WorkerHeartbeat:
    """The worker is alive; refused (the worker stops) once its grant ends or is revoked."""
    worker = _worker(uow, key, worker_id, secret)
    if worker.stopped_at is not None:
        raise Conflict(f"worker {worker_id} was stopped", hint="register again")
    grant = uow.session.get(Grant, worker.grant_id)
    assert grant is not None  # a foreign key
    _refuse_inactive(grant)
    worker.heartbeat_at = now()
    uow.commit()
    return {"worker_id": worker.id, "heartbeat_s": HEARTBEAT_S}


def deregister(
    uow: UnitOfWork, key: bytes, worker_id: str, secret: str | None
) -> WorkerStopped:
    """A clean stop: no more calls go to the worker; audited as model_worker.stopped."""
    worker = _worker(uow, key, worker_id, secret)
    if worker.stopped_at is None:
        worker.stopped_at = now()
        grant = uow.session.get(Grant, worker.grant_id)
        assert grant is not None
        uow.audit(
            AuditAction.MODEL_WORKER_STOPPED,
            Principal(kind=PrincipalKind.USER, id=str(grant.user_id)),
            {"worker": worker.id, "grant": grant.id, "deposit": worker.deposit_id},
            {},
        )
        uow.commit()
    return {"worker_id": worker.id, "stopped": True}


def _worker(uow: UnitOfWork, key: bytes, worker_id: str, secret: str | None) -> ModelWorker:
    worker = uow.session.get(ModelWorker, worker_id)
    if worker is None:
        raise NotFound(f"there is no model worker {worker_id}", hint="register first")
    if not secret or not hmac.compare_digest(secret, worker_secret(key, worker.id)):
        raise Unauthorized(
            "the worker secret is missing or wrong",
            hint="send the secret the registration answered, as X-Escrow-Worker-Secret",
        )
    return worker


def _refuse_inactive(grant: Grant) -> None:
    deposit: Deposit = grant.deposit
    why = refusal(grant, now()) or quarantine_refusal(
        grant.id, deposit.quarantined_at, deposit.quarantine_reason
    )
    if why is not None:
        raise Forbidden(why[1], hint="the operator makes a new hosting grant: escrow hosted allow")


def recipient_of_identity(text: str) -> str:
    """The recipient of an age identity file's first identity (the file stays the worker's)."""
    identities = age.parse_identities(text)
    if not identities:
        raise InvalidInput("the identity file holds no identity", hint="escrow keys generate")
    return str(identities[0].to_recipient())
