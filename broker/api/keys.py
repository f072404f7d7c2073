"""JSON API for a researcher's own keys, under `/api/v1/me/keys` (translate only).

Not `/api/v1/keys`: that path publishes the broker's own signing keys, which clients pin.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from broker.http.common import caller, escrow, json_body
from broker.http.openapi import STRING, obj, operation, path_params
from broker.services import keys as service
from broker.services.views_types import KeyList, KeyView

bp = Blueprint("researcher_keys", __name__, url_prefix="/api/v1/me/keys")

KEY_ID = path_params("key_id")
OPENAPI = {
    "/api/v1/me/keys": {
        "get": operation("your keys: pending, proven and retired", KeyList),
        "post": operation(
            "register a key (needs a login at most 5 minutes old); answers with a challenge "
            "encrypted to it",
            KeyView,
            obj(recipient=STRING, label=STRING),
            status="201",
        ),
    },
    "/api/v1/me/keys/{key_id}": {
        "get": operation("one of your keys, with its open challenge if pending", KeyView),
        "delete": operation("retire a key: no new grant goes to it", KeyView),
        "parameters": KEY_ID,
    },
    "/api/v1/me/keys/{key_id}/challenge": {
        "post": operation("a new challenge for a pending key (15 minutes)", KeyView),
        "parameters": KEY_ID,
    },
    "/api/v1/me/keys/{key_id}/proof": {
        "post": operation(
            "prove possession: the secret of the decrypted challenge, hex or base64",
            KeyView,
            obj(response=STRING),
        ),
        "parameters": KEY_ID,
    },
}


@bp.get("")
def list_keys() -> Response:
    with escrow().uow() as uow:
        answer: KeyList = {"keys": [service.describe(k) for k in service.list_keys(uow, caller())]}
        return jsonify(answer)


@bp.post("")
def register() -> tuple[Response, int]:
    body = json_body()
    with escrow().uow() as uow:
        key = service.register_key(
            uow, caller(), body.get("recipient"), body.get("label"), escrow().settings.origin
        )
        return jsonify(service.describe(key, with_challenge=True)), 201


@bp.get("/<key_id>")
def show(key_id: str) -> Response:
    with escrow().uow() as uow:
        key = service.own_key(uow, caller(), key_id)
        return jsonify(service.describe(key, with_challenge=True))


@bp.post("/<key_id>/challenge")
def challenge(key_id: str) -> Response:
    with escrow().uow() as uow:
        key = service.new_challenge(uow, caller(), key_id, escrow().settings.origin)
        return jsonify(service.describe(key, with_challenge=True))


@bp.post("/<key_id>/proof")
def prove(key_id: str) -> Response:
    response = json_body().get("response")
    with escrow().uow() as uow:
        return jsonify(service.describe(service.prove_key(uow, caller(), key_id, response)))


@bp.delete("/<key_id>")
def retire(key_id: str) -> Response:
    with escrow().uow() as uow:
        return jsonify(service.describe(service.retire_key(uow, caller(), key_id)))
