"""Health, the caller, published keys and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from broker.adapters.db.models import User
from broker.api.common import caller, escrow
from broker.api.openapi import obj, openapi_document, operation
from broker.services import health
from broker.services.people import describe_user
from broker.services.signing import published_keys

bp = Blueprint("meta", __name__)

OPENAPI = {
    "/healthz": {"get": operation("database, object store and key custody health", auth=False)},
    "/api/v1/openapi.json": {"get": operation("this document", auth=False)},
    "/api/v1/keys": {
        "get": operation(
            "the broker's Ed25519 public keys (manifest, checkpoint)",
            obj(manifest=obj(), checkpoint=obj()),
            auth=False,
        )
    },
    "/api/v1/me": {"get": operation("describes the caller")},
}


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    checks = {
        check.name.replace(" ", "_"): {"ok": check.ok, "detail": check.detail}
        for check in health.probe_all(escrow())
    }
    ok = all(c["ok"] for c in checks.values())
    return jsonify({"ok": ok, "checks": checks}), 200 if ok else 503


@bp.get("/api/v1/keys")
def keys() -> Response:
    with escrow().uow() as uow:
        return jsonify(published_keys(uow, escrow().settings.origin))


@bp.get("/api/v1/me")
def me() -> Response:
    principal = caller()
    if principal.kind != "user":
        return jsonify(
            {"kind": principal.kind, "id": principal.id, "roles": principal.describe_roles()}
        )
    with escrow().uow() as uow:
        user = uow.session.get_one(User, int(principal.id))
        return jsonify(describe_user(user, principal))


@bp.get("/api/v1/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())
