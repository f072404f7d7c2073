"""JSON API for NDA texts and signatures (translate only).

The texts are public (they are terms anyone may read before applying); signing needs a person
logged in. The caller's own signatures are under `/api/v1/me/nda-signatures`.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from broker.http.common import caller, escrow, json_body
from broker.http.openapi import STRING, obj, operation, path_params
from broker.services import ndas as service
from broker.services.views_types import NdaList, NdaSignatureList, NdaSignatureView, NdaTextView

bp = Blueprint("ndas", __name__)

SHOW = operation(
    "one NDA text, exactly; the latest version unless ?version=", NdaTextView, auth=False
)
SHOW["parameters"] = [{"name": "version", "in": "query", "required": False, "schema": STRING}]
SIGN = operation(
    "sign one version of an NDA: send its sha256 and your typed full name, optionally "
    "an SSH signature of the text (ssh-keygen -Y sign -n escrow-nda); 201 when new, "
    "200 when you had signed this text already",
    NdaSignatureView,
    obj(version=STRING, sha256=STRING, typed_name=STRING, ssh_signature=STRING),
    status="201",
)
SIGN["responses"]["200"] = SIGN["responses"]["201"]  # when you had signed this text already

OPENAPI = {
    "/api/v1/ndas": {
        "get": operation(
            "the NDA texts and the hashes of their versions", NdaList, auth=False
        ),
    },
    "/api/v1/ndas/{nda_id}": {"get": SHOW, "parameters": path_params("nda_id")},
    "/api/v1/ndas/{nda_id}/signatures": {
        "post": SIGN,
        "parameters": path_params("nda_id"),
    },
    "/api/v1/me/nda-signatures": {
        "get": operation("your NDA signatures", NdaSignatureList),
    },
}


def _library():
    return service.library(escrow().settings.policy_dir)


@bp.get("/api/v1/ndas")
def list_ndas() -> Response:
    answer: NdaList = {"ndas": service.list_ndas(_library())}
    return jsonify(answer)


@bp.get("/api/v1/ndas/<nda_id>")
def show(nda_id: str) -> Response:
    text = _library().get(nda_id, request.args.get("version") or None)
    return jsonify(service.describe_text(text))


@bp.post("/api/v1/ndas/<nda_id>/signatures")
def sign(nda_id: str) -> tuple[Response, int]:
    body = json_body()
    principal = caller()
    with escrow().uow() as uow:
        signature, created = service.sign(
            uow,
            principal,
            _library(),
            nda_id,
            body.get("version"),
            body.get("sha256"),
            body.get("typed_name"),
            body.get("ssh_signature"),
            ip=request.remote_addr,
            user_agent=request.user_agent.string,
        )
        result = service.describe_signature(uow, signature)
        result["created"] = created
        return jsonify(result), 201 if created else 200


@bp.get("/api/v1/me/nda-signatures")
def my_signatures() -> Response:
    with escrow().uow() as uow:
        signatures = service.my_signatures(uow, caller())
        answer: NdaSignatureList = {
            "signatures": [service.describe_signature(uow, s) for s in signatures]
        }
        return jsonify(answer)
