"""API keys of hosted access (a person's own, each bound to one of their inference grants).

POST   /api/v1/hosted/keys             {grant_id}: a new key, its secret shown once (201)
GET    /api/v1/hosted/keys             the caller's keys (never a secret)
DELETE /api/v1/hosted/keys/<key_id>    revoked: the next /v1 request with it is refused
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from broker.http.common import caller, escrow, json_body
from broker.http.openapi import STRING, obj, operation, path_params
from broker.services import hosted_keys as service
from broker.services.views_types import HostedKeyCreated, HostedKeyList, HostedKeyView

bp = Blueprint("hosted_keys", __name__)

OPENAPI = {
    "/api/v1/hosted/keys": {
        "post": operation(
            "a new API key of your inference grant: the /v1 API's bearer for that grant's "
            "version only (the secret is shown this once)",
            HostedKeyCreated, obj(grant_id=STRING), status="201"),
        "get": operation("your API keys (never their secrets)", HostedKeyList),
    },
    "/api/v1/hosted/keys/{key_id}": {
        "parameters": path_params("key_id"),
        "delete": operation("revoke your API key: its next request is refused", HostedKeyView),
    },
}


@bp.post("/api/v1/hosted/keys")
def create() -> tuple[Response, int]:
    actor = caller()
    body = json_body()
    with escrow().uow() as uow:
        return jsonify(service.create(uow, actor, body.get("grant_id"))), 201


@bp.get("/api/v1/hosted/keys")
def list_keys() -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(service.list_keys(uow, actor))


@bp.delete("/api/v1/hosted/keys/<key_id>")
def revoke(key_id: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(service.revoke(uow, actor, key_id))
