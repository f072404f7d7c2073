"""Organisation members (org admins) and global roles (operators)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from broker.http.common import caller, escrow, json_body
from broker.http.openapi import STRING, obj, operation, path_params
from broker.services import members
from broker.services.views_types import Done, MemberList

bp = Blueprint("orgs", __name__, url_prefix="/api/v1")

ROLE_BODY = obj(user=STRING, role=STRING)
OPENAPI = {
    "/api/v1/orgs/{org}/members": {
        "parameters": path_params("org"),
        "get": operation(
            "members of an organisation and their roles (org admin)",
            MemberList,
        ),
        "post": operation(
            "grant a member a role: depositor, reviewer or admin (org admin)", Done, ROLE_BODY
        ),
        "delete": operation("take a role away from a member (org admin)", Done, ROLE_BODY),
    },
    "/api/v1/roles": {
        "post": operation("grant a global role: auditor or operator (operator)", Done, ROLE_BODY),
        "delete": operation("take a global role away (operator)", Done, ROLE_BODY),
    },
}


@bp.get("/orgs/<org>/members")
def list_members(org: str) -> Response:
    with escrow().uow() as uow:
        answer: MemberList = {"members": members.list_members(uow, caller(), org)}
        return jsonify(answer)


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
    done: Done = {"ok": True}
    return jsonify(done)


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
    done: Done = {"ok": True}
    return jsonify(done)
