"""Hosted access for people: which versions a caller may query, and the worker a query goes to.

Every query asks `route`, in its own short transaction: the caller is a person (authorize), the
version exists, the caller holds an active `inference` grant of it now (not revoked, in its
period, the version not quarantined), and a worker serving it heartbeated within
`domain.hosting.LIVE_FOR`. So a revoked grant stops the very next request, and a dead worker
leaves routing within LIVE_FOR (its calls fail over to the others meanwhile).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import select

from broker.adapters.db.models import Deposit, Grant, ModelWorker
from broker.adapters.db.uow import UnitOfWork
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.hosting import (
    INTERNALS,
    LIVE_FOR,
    QUERYING_KINDS,
    SECRET_HEADER,
    internals_refusal,
    model_name,
)
from broker.domain.principals import Principal
from broker.errors import Forbidden, InvalidInput, NotFound, Unavailable
from broker.services.access.requests import find_sealed_deposit
from broker.services.grants import refusal
from broker.services.hosting import worker_secret
from broker.services.quarantine import refusal as quarantine_refusal

CONNECT_S = 3.0  # a live worker accepts a connection at once
READ_S = 120.0  # the longest wait for a worker's next bytes (a generation's first piece)


class NoWorker(Unavailable):
    title = "no model worker"


@dataclass(frozen=True)
class Route:
    """Where one query goes: a live worker of the version, and the grant it is made under."""

    model: str  # ORG/MODEL@VERSION
    grant_id: str
    worker_id: str
    url: str
    secret: str
    others: tuple[tuple[str, str, str], ...] = ()  # (worker id, url, secret): to fail over
    requests_per_minute: int | None = None  # the grant's quotas (broker.services.hosted_usage)
    tokens_per_day: int | None = None
    kind: str = "inference"  # the grant's kind: internals also answers research views
    deposit_id: str = ""  # the version's deposit (studies that cover it capture the exchange)


def parse_model(name: object) -> tuple[str, str]:
    if not isinstance(name, str) or "@" not in name:
        raise InvalidInput(
            f"model {name!r} is not a hosted model name",
            hint="name it ORG/MODEL@VERSION, as GET /v1/models lists them",
        )
    model, _, version = name.rpartition("@")
    return model, version


def models(
    uow: UnitOfWork, actor: Principal, key_grant: str | None = None
) -> list[dict[str, object]]:
    """The versions the caller may query now (an active inference grant of each; with an API
    key, its grant's only)."""
    authorize(actor, Action.HOSTED_QUERY)
    moment = now()
    query = select(Grant).where(Grant.user_id == int(actor.id), Grant.kind.in_(QUERYING_KINDS))
    if key_grant is not None:
        query = query.where(Grant.id == key_grant)
    grants = uow.session.scalars(query).all()
    seen: dict[str, dict[str, object]] = {}
    for grant in grants:
        deposit: Deposit = grant.deposit
        if refusal(grant, moment) or deposit.quarantined_at is not None:
            continue
        name = model_name(deposit.model.organisation.name, deposit.model.name, deposit.version)
        seen[name] = {
            "id": name,
            "object": "model",
            "created": int(deposit.sealed_at.timestamp()) if deposit.sealed_at else 0,
            "owned_by": deposit.model.organisation.name,
        }
    return [seen[name] for name in sorted(seen)]


def route(
    uow: UnitOfWork, key: bytes, actor: Principal, name: object, key_grant: str | None = None,
    internals: bool = False,
) -> Route:
    """The grant and a live worker for a query of `name` by `actor` (with an API key: of the
    key's grant `key_grant` only), or the refusal; `internals`: the query asks for a research
    view, which only an internals grant answers."""
    authorize(actor, Action.HOSTED_QUERY)
    model, version = parse_model(name)
    try:
        deposit = find_sealed_deposit(uow, model, version)
    except NotFound as error:
        raise NotFound(error.message, hint="GET /v1/models lists what you may query") from None
    grant = _inference_grant(uow, actor, deposit, key_grant, internals)
    moment = now()
    live = uow.session.scalars(
        select(ModelWorker).where(
            ModelWorker.deposit_id == deposit.id,
            ModelWorker.stopped_at.is_(None),
            ModelWorker.heartbeat_at > moment - LIVE_FOR,
        )
    ).all()
    full = f"{model}@{version}"
    if not live:
        raise NoWorker(
            f"no model worker is serving {full}",
            hint=f"the operator starts one: escrow model-worker {full} --broker BROKER "
            "(see the README, Hosted access); retry in a minute",
        )
    order = random.sample(list(live), len(live))  # spread the load
    first, rest = order[0], order[1:]
    return Route(full, grant.id, first.id, first.url, worker_secret(key, first.id),
                 tuple((w.id, w.url, worker_secret(key, w.id)) for w in rest),
                 grant.requests_per_minute, grant.tokens_per_day, grant.kind, deposit.id)


_local = threading.local()


def _workers() -> requests.Session:
    """This thread's HTTP session to the workers: it keeps their connections open between
    calls (a worker's server speaks HTTP/1.1), which saves a connect on every query."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


def send(route: Route, path: str, body: dict[str, Any], stream: bool) -> requests.Response:
    """POST `body` to `path` of the route's worker, failing over to the next live one when a
    worker refuses the connection (dead since its last heartbeat); NoWorker when none answers
    or one does not in time. The worker's answer, streamed if `stream`, for the caller to relay
    (and count: broker.services.hosted_usage.record)."""
    for worker_id, url, secret in ((route.worker_id, route.url, route.secret), *route.others):
        try:
            return _workers().post(
                url + path, json=body, headers={SECRET_HEADER: secret},
                timeout=(CONNECT_S, READ_S), stream=stream,
            )
        except requests.ConnectionError:
            continue  # dead since its last heartbeat: the next one
        except requests.Timeout:
            raise NoWorker(
                f"model worker {worker_id} of {route.model} did not answer in time",
                hint="retry; if it persists, tell the operator",
            ) from None
    raise NoWorker(
        f"no model worker is serving {route.model}: the live ones did not answer",
        hint=f"the operator starts one: escrow model-worker {route.model} --broker BROKER "
        "(see the README, Hosted access); retry in a minute",
    )


def _inference_grant(
    uow: UnitOfWork, actor: Principal, deposit: Deposit, key_grant: str | None,
    internals: bool = False,
) -> Grant:
    full = f"{deposit.model.full_name}@{deposit.version}"
    query = select(Grant).where(Grant.user_id == int(actor.id), Grant.deposit_id == deposit.id)
    if key_grant is not None:
        bound = uow.session.get(Grant, key_grant)
        if bound is None or bound.deposit_id != deposit.id:
            other = (f"{bound.deposit.model.full_name}@{bound.deposit.version}"
                     if bound is not None else "another version")
            raise Forbidden(
                f"this API key may not query {full}: it is bound to grant {key_grant} of "
                f"{other}",
                hint=f"query {other} with it, or make a key of a grant of {full}: "
                "escrow hosted key create GRANT",
            )
        query = query.where(Grant.id == key_grant)
    grants = uow.session.scalars(query.order_by(Grant.created_at)).all()
    moment = now()
    inference = [g for g in grants if g.kind in QUERYING_KINDS]
    active = [g for g in inference if refusal(g, moment) is None]
    if not active:
        if inference:
            why = refusal(inference[-1], moment)
            assert why is not None
            detail = why[1]
        elif grants:
            detail = f"your grant of {full} is of kind {grants[-1].kind}, which gives no queries"
        else:
            detail = f"you have no grant of {full}"
        raise Forbidden(
            f"you may not query {full}: {detail}",
            hint=f"ask for inference access: escrow request {deposit.model.full_name}@"
            f"{deposit.version} --kind inference --purpose '…'",
        )
    if internals:
        active = _internals_only(active, full)
    why_not = quarantine_refusal(active[-1].id, deposit.quarantined_at, deposit.quarantine_reason)
    if why_not is not None:
        raise Forbidden(why_not[1].replace("no key of it is released", "it is not served"),
                        hint="wait until the operator lifts the quarantine")
    return active[-1]


def _internals_only(active: list[Grant], full: str) -> list[Grant]:
    """The active grants that answer research views (internals), or the refusal."""
    fitting = [g for g in active if g.kind == INTERNALS]
    if not fitting:
        message, hint = internals_refusal(active[-1].kind, full)
        raise Forbidden(message, hint=hint)
    return fitting
