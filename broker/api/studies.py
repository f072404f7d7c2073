"""Studies of live use, with consent (broker.services.studies).

POST   /api/v1/studies                               a researcher registers one (201, proposed)
GET    /api/v1/studies                               those the caller may see
GET    /api/v1/studies/<study>                       one, by id or name
POST   /api/v1/studies/<study>/approve | reject      the model's lab decides ({note})
POST   /api/v1/studies/<study>/close                 its owner or the lab: capture stops
POST   /api/v1/studies/<study>/consent               the caller donates their exchanges from now
DELETE /api/v1/studies/<study>/consent               withdrawn: the next exchange is not captured
GET    /api/v1/studies/<study>/members           its team besides the owner (the team)
POST   /api/v1/studies/<study>/members           the owner adds one ({user}: email or user id)
DELETE /api/v1/studies/<study>/members/<user>    the owner removes one (email or user id)
GET    /api/v1/studies/<study>/captures?after=&limit=   the captures, a page at a time (team)
GET    /api/v1/studies/<study>/captures/<capture>/url   a signed URL of one age file (team)
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from broker.errors import InvalidInput
from broker.http.common import caller, escrow, json_body
from broker.http.openapi import STRING, obj, operation, path_params
from broker.services import studies as service
from broker.services import study_captures
from broker.services.views_types import (
    StudyCaptureList,
    StudyCaptureUrl,
    StudyConsentView,
    StudyList,
    StudyMemberList,
    StudyView,
)

bp = Blueprint("studies", __name__)

STUDY = "/api/v1/studies/{study}"
PAGE_PARAMS = [
    {"name": "after", "in": "query", "required": False, "schema": STRING},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": study_captures.PAGE}},
]


def _captures() -> dict[str, object]:
    spec = operation("the study's captures (age files), in order, a page at a time: its team "
                     "(owner and members) only", StudyCaptureList)
    spec["parameters"] = PAGE_PARAMS
    return spec


OPENAPI = {
    "/api/v1/studies": {
        "post": operation(
            "register a study of live use of a model (ORG/MODEL) or one version "
            "(ORG/MODEL@VERSION): its captures are encrypted to the recipients; the lab "
            "approves it", StudyView,
            obj(model=STRING, name=STRING, title=STRING, purpose=STRING,
                recipients={"type": "array", "items": STRING}), status="201"),
        "get": operation("the studies you may see (approved ones, yours, your lab's)",
                         StudyList),
    },
    STUDY: {"parameters": path_params("study"),
            "get": operation("one study (by id or name)", StudyView)},
    STUDY + "/approve": {"parameters": path_params("study"), "post": operation(
        "the model's lab approves a proposed study", StudyView, obj(note=STRING))},
    STUDY + "/reject": {"parameters": path_params("study"), "post": operation(
        "the model's lab rejects a proposed study", StudyView, obj(note=STRING))},
    STUDY + "/close": {"parameters": path_params("study"), "post": operation(
        "its owner or the lab closes a study: nothing more is captured", StudyView)},
    STUDY + "/consent": {
        "parameters": path_params("study"),
        "post": operation("donate your hosted exchanges to an approved study from now on",
                          StudyConsentView),
        "delete": operation("withdraw your consent: your next exchange is not captured",
                            StudyConsentView),
    },
    STUDY + "/members": {
        "parameters": path_params("study"),
        "get": operation("the study's team besides its owner: its team only", StudyMemberList),
        "post": operation("its owner adds a person (email or user id) to the study's team: "
                          "they list and fetch its captures too", StudyMemberList,
                          obj(user=STRING)),
    },
    STUDY + "/members/{user}": {
        "parameters": path_params("study", "user"),
        "delete": operation("its owner removes a person (email or user id) from the study's "
                            "team: they no longer list or fetch its captures", StudyMemberList),
    },
    STUDY + "/captures": {"parameters": path_params("study"), "get": _captures()},
    STUDY + "/captures/{capture_id}/url": {
        "parameters": path_params("study", "capture_id"),
        "get": operation("a signed URL of one capture's age file: the study's team only",
                         StudyCaptureUrl)},
}


@bp.post("/api/v1/studies")
def register() -> tuple[Response, int]:
    actor = caller()
    body = json_body()
    with escrow().uow() as uow:
        made = service.register(uow, actor, body.get("model"), body.get("name"),
                                body.get("title"), body.get("purpose"), body.get("recipients"))
        return jsonify(made), 201


@bp.get("/api/v1/studies")
def list_studies() -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(service.list_studies(uow, actor))


@bp.get("/api/v1/studies/<study>")
def show(study: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(service.show(uow, actor, study))


@bp.post("/api/v1/studies/<study>/approve")
def approve(study: str) -> Response:
    return _decide(study, "approve")


@bp.post("/api/v1/studies/<study>/reject")
def reject(study: str) -> Response:
    return _decide(study, "reject")


def _decide(study: str, decision: str) -> Response:
    actor = caller()
    body = json_body(optional=True)
    with escrow().uow() as uow:
        return jsonify(service.decide(uow, actor, study, decision, body.get("note")))


@bp.post("/api/v1/studies/<study>/close")
def close(study: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(service.close(uow, actor, study))


@bp.post("/api/v1/studies/<study>/consent")
def consent(study: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(service.consent(uow, actor, study))


@bp.delete("/api/v1/studies/<study>/consent")
def withdraw(study: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(service.withdraw(uow, actor, study))


@bp.get("/api/v1/studies/<study>/members")
def members(study: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(service.list_members(uow, actor, study))


@bp.post("/api/v1/studies/<study>/members")
def add_member(study: str) -> Response:
    actor = caller()
    body = json_body()
    with escrow().uow() as uow:
        return jsonify(service.add_member(uow, actor, study, body.get("user")))


@bp.delete("/api/v1/studies/<study>/members/<user>")
def remove_member(study: str, user: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(service.remove_member(uow, actor, study, user))


@bp.get("/api/v1/studies/<study>/captures")
def captures(study: str) -> Response:
    actor = caller()
    limit = request.args.get("limit", str(study_captures.PAGE))
    if not limit.isdigit() or not 1 <= int(limit) <= study_captures.PAGE:
        raise InvalidInput(f"?limit={limit!r} is not a number from 1 to {study_captures.PAGE}",
                           hint=f"give limit as digits, at most {study_captures.PAGE}")
    with escrow().uow() as uow:
        return jsonify(study_captures.list_captures(uow, actor, study, request.args.get("after"),
                                                    int(limit)))


@bp.get("/api/v1/studies/<study>/captures/<capture_id>/url")
def capture_url(study: str, capture_id: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(study_captures.capture_url(escrow(), uow, actor, study, capture_id))
