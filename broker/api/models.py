"""JSON API of the public catalogue: the escrowed models and their policies (no login needed)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from broker.http.common import escrow
from broker.http.openapi import operation
from broker.services import catalog
from broker.services.views_types import ModelList

bp = Blueprint("models", __name__, url_prefix="/api/v1")

OPENAPI = {
    "/api/v1/models": {
        "get": operation(
            "the escrowed models (sealed versions only), their sizes, dates and access "
            "policies in words; public",
            ModelList,
            auth=False,
        )
    },
}


@bp.get("/models")
def list_models() -> Response:
    with escrow().uow() as uow:
        answer: ModelList = {"models": catalog.list_models(uow, escrow().settings.policy_dir)}
        return jsonify(answer)
