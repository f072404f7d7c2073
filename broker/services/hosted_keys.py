"""API keys of hosted access: a secret bound to one inference grant of its owner.

`escrow hosted key create GRANT` makes one (shown once, stored as SHA-256 like every bearer
secret, broker.domain.secrets: prefix `ehk`). It authenticates the /v1 API only, as its owner
and for its grant's version only; every query still checks the grant (broker.services.hosted),
so revoking the key or the grant stops the next request. Made and revoked on the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from broker.adapters.db.models import Grant, HostedKey, User
from broker.adapters.db.uow import UnitOfWork
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.hosting import QUERYING_KINDS, model_name
from broker.domain.principals import Principal, PrincipalKind
from broker.domain.secrets import new_secret, secret_matches, split_secret
from broker.errors import Forbidden, NotFound, Unauthorized
from broker.services.grants import iso, refusal
from broker.services.views_types import HostedKeyCreated, HostedKeyList, HostedKeyView

PREFIX = "ehk"
LAST_USED_STEP = timedelta(minutes=1)  # how fresh a key's last_used_at is kept

INVALID_KEY = Unauthorized(
    "the API key is invalid or revoked",
    hint="make a new one: escrow hosted key create GRANT (or use your login's token)",
)


@dataclass(frozen=True)
class KeyCaller:
    """Who a key stands for: its owner, limited to one grant."""

    principal: Principal
    key_id: str
    grant_id: str


def create(uow: UnitOfWork, actor: Principal, grant_id: object) -> HostedKeyCreated:
    """A new key of the caller's own inference grant (active now): its secret, shown once."""
    authorize(actor, Action.HOSTED_KEYS)
    grant = uow.session.get(Grant, grant_id) if isinstance(grant_id, str) else None
    if grant is None or str(grant.user_id) != actor.id:
        raise NotFound(
            f"you have no grant {grant_id}",
            hint="escrow requests lists your grants; ask with --kind inference",
        )
    if grant.kind not in QUERYING_KINDS:
        raise Forbidden(
            f"grant {grant.id} is of kind {grant.kind}: API keys are for inference grants",
            hint="ask for inference access: escrow request ORG/MODEL@VERSION --kind inference",
        )
    why = refusal(grant, now())
    if why is not None:
        raise Forbidden(why[1], hint="ask for a new grant, then make a key of it")
    secret = new_secret(PREFIX)
    key = HostedKey(id=secret.id, secret_sha256=secret.secret_sha256, grant_id=grant.id,
                    user_id=grant.user_id, created_at=now())
    uow.session.add(key)
    uow.session.flush()
    uow.audit(AuditAction.HOSTED_KEY_CREATED, actor,
              {"key": key.id, "grant": grant.id, "deposit": grant.deposit_id}, {})
    uow.commit()
    return {**_view(key, grant), "key": secret.plaintext}


def list_keys(uow: UnitOfWork, actor: Principal) -> HostedKeyList:
    authorize(actor, Action.HOSTED_KEYS)
    keys = uow.session.scalars(
        select(HostedKey).where(HostedKey.user_id == int(actor.id)).order_by(HostedKey.created_at)
    ).all()
    return {"keys": [_view(key, _grant(uow, key)) for key in keys]}


def revoke(uow: UnitOfWork, actor: Principal, key_id: str) -> HostedKeyView:
    """The caller's key stops at once (its next request is refused); revoking twice is fine."""
    authorize(actor, Action.HOSTED_KEYS)
    key = uow.session.get(HostedKey, key_id)
    if key is None or str(key.user_id) != actor.id:
        raise NotFound(f"you have no API key {key_id}", hint="escrow hosted key list")
    grant = _grant(uow, key)
    if key.revoked_at is None:
        key.revoked_at = now()
        uow.audit(AuditAction.HOSTED_KEY_REVOKED, actor,
                  {"key": key.id, "grant": grant.id, "deposit": grant.deposit_id}, {})
        uow.commit()
    return _view(key, grant)


def authenticate(uow: UnitOfWork, presented: str) -> KeyCaller:
    """The owner and grant of an API key (not revoked, its owner not disabled); the grant's
    own state is checked by each query."""
    parts = split_secret(presented, PREFIX)
    if parts is None:
        raise INVALID_KEY
    found = uow.session.execute(
        select(HostedKey.id, HostedKey.secret_sha256, HostedKey.revoked_at, HostedKey.grant_id,
               HostedKey.user_id, HostedKey.last_used_at, User.disabled_at)
        .join(User, User.id == HostedKey.user_id)
        .where(HostedKey.id == parts[0])
    ).first()
    if (found is None or not secret_matches(parts[1], found.secret_sha256)
            or found.revoked_at is not None or found.disabled_at is not None):
        raise INVALID_KEY
    moment = now()
    if found.last_used_at is None or moment - found.last_used_at >= LAST_USED_STEP:
        # to the minute: one write a minute per key at most, not one per request
        uow.session.execute(update(HostedKey).where(HostedKey.id == found.id)
                            .values(last_used_at=moment))
        uow.commit()
    return KeyCaller(Principal(kind=PrincipalKind.USER, id=str(found.user_id)), found.id,
                     found.grant_id)


def _grant(uow: UnitOfWork, key: HostedKey) -> Grant:
    grant = uow.session.get(Grant, key.grant_id)
    assert grant is not None  # a foreign key
    return grant


def _view(key: HostedKey, grant: Grant) -> HostedKeyView:
    deposit = grant.deposit
    return {
        "id": key.id,
        "grant_id": grant.id,
        "model": model_name(deposit.model.organisation.name, deposit.model.name,
                            deposit.version),
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at) if key.last_used_at else None,
        "revoked_at": iso(key.revoked_at) if key.revoked_at else None,
    }
