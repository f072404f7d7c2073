"""Quarantine of model versions (operators): key releases and new requests stop until lifted.

POST   /api/v1/quarantine/<org>/<model>/<version>   quarantine, with a reason
DELETE /api/v1/quarantine/<org>/<model>/<version>   lift it
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from broker.http.common import caller, escrow, json_body
from broker.http.openapi import STRING, obj, operation, path_params
from broker.services import quarantine as service
from broker.services.views_types import QuarantineView

bp = Blueprint("quarantine", __name__, url_prefix="/api/v1")

OPENAPI = {
    "/api/v1/quarantine/{org}/{model}/{version}": {
        "parameters": path_params("org", "model", "version"),
        "post": operation(
            "quarantine a model version (operator): every key release and new request of it "
            "is refused at once, until lifted; quarantining it again changes nothing "
            "(changed: false)",
            QuarantineView,
            obj(reason=STRING),
        ),
        "delete": operation(
            "lift a version's quarantine (operator): key releases resume; lifting it again "
            "changes nothing (changed: false)",
            QuarantineView,
        ),
    },
}


@bp.post("/quarantine/<org>/<model>/<version>")
def quarantine(org: str, model: str, version: str) -> Response:
    actor = caller()  # authenticate before reading the body
    body = json_body()
    with escrow().uow() as uow:
        return jsonify(
            service.quarantine(uow, actor, f"{org}/{model}", version, body.get("reason"))
        )


@bp.delete("/quarantine/<org>/<model>/<version>")
def lift(org: str, model: str, version: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(service.lift(uow, actor, f"{org}/{model}", version))
