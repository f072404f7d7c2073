"""JSON API of the public catalogue: the escrowed models and their policies (no login needed)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from broker.http.common import escrow
from broker.http.openapi import BOOLEAN, INTEGER, STRING, array, obj, operation
from broker.services import catalog

bp = Blueprint("models", __name__, url_prefix="/api/v1")

NULLABLE_STRING = {"type": ["string", "null"]}
VERSION = obj(
    version=STRING,
    deposit_id=STRING,
    size={**INTEGER, "description": "plaintext bytes, all files"},
    files=INTEGER,
    encryption=STRING,
    sealed_at=STRING,
    last_verified_at=NULLABLE_STRING,
)
POLICY = obj(
    id=STRING,
    sha256=STRING,
    description=STRING,
    nda={"type": ["object", "null"], "properties": {"id": STRING, "min_version": STRING}},
    eligibility=obj(
        verified_email=BOOLEAN,
        email_domains=array(STRING),
        affiliations=array(STRING),
        proven_key=BOOLEAN,
        post_quantum_key=BOOLEAN,
    ),
    approvals=obj(count=INTEGER, role=STRING, auto=BOOLEAN, allow_requester_org=BOOLEAN),
    grant=obj(default_days=INTEGER, max_days=INTEGER, releases_per_file=INTEGER, renewal=BOOLEAN),
    embargo_until=NULLABLE_STRING,
    summary={**array(STRING), "description": "the policy in sentences"},
)
MODEL = obj(
    name={**STRING, "description": "ORG/MODEL"},
    organisation=STRING,
    model=STRING,
    versions=array(VERSION),
    policy={**POLICY, "type": ["object", "null"]},
    policy_problem=NULLABLE_STRING,
)
OPENAPI = {
    "/api/v1/models": {
        "get": operation(
            "the escrowed models (sealed versions only), their sizes, dates and access "
            "policies in words; public",
            obj(models=array(MODEL)),
            auth=False,
        )
    },
}


@bp.get("/models")
def list_models() -> Response:
    with escrow().uow() as uow:
        return jsonify({"models": catalog.list_models(uow, escrow().settings.policy_dir)})
