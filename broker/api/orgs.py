"""Organisation members (org admins) and global roles (operators)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from broker.http.common import caller, escrow, json_body
from broker.http.openapi import STRING, array, obj, operation, path_params
from broker.services import members

bp = Blueprint("orgs", __name__, url_prefix="/api/v1")

ROLE_BODY = obj(user=STRING, role=STRING)
OPENAPI = {
    "/api/v1/orgs/{org}/members": {
        "parameters": path_params("org"),
        "get": operation(
            "members of an organisation and their roles (org admin)",
            obj(members=array(obj(user=STRING, email=STRING, role=STRING))),
        ),
        "post": operation(
            "grant a member a role: depositor, reviewer or admin (org admin)", body=ROLE_BODY
        ),
        "delete": operation("take a role away from a member (org admin)", body=ROLE_BODY),
    },
    "/api/v1/roles": {
        "post": operation("grant a global role: auditor or operator (operator)", body=ROLE_BODY),
        "delete": operation("take a global role away (operator)", body=ROLE_BODY),
    },
}


@bp.get("/orgs/<org>/members")
def list_members(org: str) -> Response:
    with escrow().uow() as uow:
        return jsonify({"members": members.list_members(uow, caller(), org)})


@bp.post("/orgs/<org>/members")
def grant_member(org: str) -> Response:
    return _member(org, grant=True)


@bp.delete("/orgs/<org>/members")
def revoke_member(org: str) -> Response:
    return _member(org, grant=False)


def _member(org: str, grant: bool) -> Response:
    body = json_body()
    with escrow().uow() as uow:
        members.set_member_role(
            uow, caller(), org, str(body.get("user", "")), str(body.get("role", "")), grant
        )
    return jsonify({"ok": True})


@bp.post("/roles")
def grant_global() -> Response:
    return _global(grant=True)


@bp.delete("/roles")
def revoke_global() -> Response:
    return _global(grant=False)


def _global(grant: bool) -> Response:
    body = json_body()
    with escrow().uow() as uow:
        members.set_global_role(
            uow, caller(), str(body.get("user", "")), str(body.get("role", "")), grant
        )
    return jsonify({"ok": True})
