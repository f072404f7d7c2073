"""JSON API for NDA texts and signatures (translate only).

The texts are public (they are terms anyone may read before applying); signing needs a person
logged in. The caller's own signatures are under `/api/v1/me/nda-signatures`.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from broker.http.common import caller, escrow, json_body
from broker.http.openapi import BOOLEAN, INTEGER, STRING, array, obj, operation, path_params
from broker.services import ndas as service

bp = Blueprint("ndas", __name__)

TEXT = obj(
    id=STRING,
    version=STRING,
    title=STRING,
    organisation=STRING,
    sha256=STRING,
    size=INTEGER,
    text={"type": "string", "description": "the file's exact content, front matter included"},
)
SUMMARY = obj(
    id=STRING,
    title=STRING,
    organisation=STRING,
    latest_version=STRING,
    sha256=STRING,
    versions=array(obj(version=STRING, sha256=STRING)),
)
SIGNATURE = obj(
    id=STRING,
    nda=STRING,
    version=STRING,
    sha256=STRING,
    signed_at=STRING,
    ssh_signature={"type": ["string", "null"]},
    ssh_key={"type": ["string", "null"]},
    ssh_public_key=STRING,
    ssh_key_fingerprint=STRING,
    allowed_signers=STRING,
    verify_command=STRING,
    created=BOOLEAN,
)
SHOW = operation("one NDA text, exactly; the latest version unless ?version=", TEXT, auth=False)
SHOW["parameters"] = [{"name": "version", "in": "query", "required": False, "schema": STRING}]
SIGN = operation(
    "sign one version of an NDA: send its sha256 and your typed full name, optionally "
    "an SSH signature of the text (ssh-keygen -Y sign -n escrow-nda); 201 when new, "
    "200 when you had signed this text already",
    SIGNATURE,
    obj(version=STRING, sha256=STRING, typed_name=STRING, ssh_signature=STRING),
    status="201",
)
SIGN["responses"]["200"] = SIGN["responses"]["201"]  # when you had signed this text already

OPENAPI = {
    "/api/v1/ndas": {
        "get": operation(
            "the NDA texts and the hashes of their versions", obj(ndas=array(SUMMARY)), auth=False
        ),
    },
    "/api/v1/ndas/{nda_id}": {"get": SHOW, "parameters": path_params("nda_id")},
    "/api/v1/ndas/{nda_id}/signatures": {
        "post": SIGN,
        "parameters": path_params("nda_id"),
    },
    "/api/v1/me/nda-signatures": {
        "get": operation("your NDA signatures", obj(signatures=array(SIGNATURE))),
    },
}


def _library():
    return service.library(escrow().settings.policy_dir)


@bp.get("/api/v1/ndas")
def list_ndas() -> Response:
    return jsonify({"ndas": service.list_ndas(_library())})


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
        result = {**service.describe_signature(uow, signature), "created": created}
        return jsonify(result), 201 if created else 200


@bp.get("/api/v1/me/nda-signatures")
def my_signatures() -> Response:
    with escrow().uow() as uow:
        signatures = service.my_signatures(uow, caller())
        return jsonify({"signatures": [service.describe_signature(uow, s) for s in signatures]})
