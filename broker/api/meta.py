"""Health, the caller, published keys and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from broker.http.common import caller, escrow
from broker.http.openapi import document_of, operation
from broker.services import health
from broker.services.people import describe_caller
from broker.services.signing import published_keys
from broker.services.views_types import CallerView, Health, HealthCheck, PublishedKeys

bp = Blueprint("meta", __name__)

OPENAPI = {
    "/healthz": {
        "get": operation("database, object store and key custody health", Health, auth=False),
    },
    "/api/v1/openapi.json": {"get": operation("this document", auth=False)},
    "/api/v1/keys": {
        "get": operation(
            "the broker's Ed25519 public keys (manifest, checkpoint)",
            PublishedKeys,
            auth=False,
        )
    },
    "/api/v1/me": {"get": operation("describes the caller", CallerView)},
}


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    checks: dict[str, HealthCheck] = {
        check.name.replace(" ", "_"): {"ok": check.ok, "detail": check.detail}
        for check in health.probe_all(escrow())
    }
    answer: Health = {"ok": all(c["ok"] for c in checks.values()), "checks": checks}
    return jsonify(answer), 200 if answer["ok"] else 503


@bp.get("/api/v1/keys")
def keys() -> Response:
    with escrow().uow() as uow:
        return jsonify(published_keys(uow, escrow().settings.origin))


@bp.get("/api/v1/me")
def me() -> Response:
    principal = caller()
    with escrow().uow() as uow:
        return jsonify(describe_caller(uow, principal))


@bp.get("/api/v1/openapi.json")
def openapi() -> Response:
    return jsonify(document_of(current_app))
