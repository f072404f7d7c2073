"""JSON API for access: requests, reviews, grants and key releases (translate only).

POST /api/v1/requests                       ask for a sealed model version (a person)
POST /api/v1/requests/explain               what the policy would decide, changing nothing
GET  /api/v1/requests[/<id>]                my requests (a request: mine, or my org's)
POST /api/v1/requests/<id>/approve|deny     a reviewer's decision
POST /api/v1/requests/<id>/withdraw         the requester takes back a pending request
GET  /api/v1/reviews                        pending requests of the orgs I review for
GET  /api/v1/grants[?org=ORG]               my grants, or an organisation's (reviewers)
POST /api/v1/grants/<id>/revoke             at once (reviewer or admin of the org)
POST /api/v1/grants/<id>/renew              ask to continue an active grant (a new request)
POST /api/v1/grants/<id>/files/<n>/release  a fresh header for the pinned key + payload URL
GET  /api/v1/grants/<id>/manifest           the deposit's signed manifest, to verify
GET  /api/v1/grants/<id>/closeout           the close-out message of an ended grant of mine
POST /api/v1/grants/<id>/closeout           attest that the weights were deleted (typed name)
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify, request

from broker.http.common import caller, escrow, json_body, problem
from broker.http.openapi import BOOLEAN, INTEGER, STRING, obj, operation, path_params
from broker.services import access as service
from broker.services import closeouts, grant_release, grants
from broker.services.views_types import (
    CloseoutView,
    Explanation,
    GrantList,
    GrantView,
    ReleasedKey,
    RequestList,
    RequestOutcome,
    RequestView,
    ReviewQueue,
    SignedManifest,
)

bp = Blueprint("access", __name__, url_prefix="/api/v1")

ASK = obj(
    model=STRING, version=STRING, purpose=STRING, days=INTEGER, key_id=STRING, kind=STRING
)
DECIDE = operation(
    "decide a pending request (reviewer or admin of its organisation)",
    RequestOutcome,
    obj(comment=STRING),
)
GRANTS = operation(
    "your grants; ?org=ORG: the grants of an organisation (its reviewers)", GrantList
)
GRANTS["parameters"] = [{"name": "org", "in": "query", "required": False, "schema": STRING}]
RENEW = operation(
    "ask to renew an active grant of yours, when its policy allows renewal: a new request, "
    "reviewed like any other; granted, it continues the grant for the same key from its "
    "expiry. 201 pending or approved (then with its grant); 403 when the policy does not "
    "allow renewal; 409 when the grant is not active, renewed already or has a renewal "
    "pending; 422 with what is missing when not eligible (recorded as denied)",
    RequestOutcome,
    obj(days=INTEGER, purpose=STRING),
    status="201",
)
RENEW["requestBody"]["required"] = False  # both default: the policy's days, the first purpose
CLOSE = operation(
    "close out an ended grant of yours: attest that the weights were deleted, with your typed "
    "name and optionally an SSH signature of the close-out message (ssh-keygen -Y sign -n "
    "escrow-closeout); 201 when new, 200 when it was closed out already; 409 before the grant "
    "ended or while a renewal continues it",
    CloseoutView,
    obj(attest_deleted=BOOLEAN, typed_name=STRING, ssh_signature=STRING),
    status="201",
)
CLOSE["responses"]["200"] = CLOSE["responses"]["201"]
OPENAPI = {
    "/api/v1/requests": {
        "post": operation(
            "ask for access to a sealed model version; 201 pending or approved (then with "
            "its grant); 422 with what is missing when not eligible (recorded as denied)",
            RequestOutcome,
            ASK,
            status="201",
        ),
        "get": operation("your requests", RequestList),
    },
    "/api/v1/requests/explain": {
        "post": operation(
            "what the policy would decide on this request now; records nothing",
            Explanation,
            ASK,
        ),
    },
    "/api/v1/requests/{request_id}": {
        "get": operation(
            "one request: yours, or one of an organisation you review for", RequestView
        ),
        "parameters": path_params("request_id"),
    },
    "/api/v1/requests/{request_id}/approve": {
        "post": DECIDE,
        "parameters": path_params("request_id"),
    },
    "/api/v1/requests/{request_id}/deny": {
        "post": DECIDE,
        "parameters": path_params("request_id"),
    },
    "/api/v1/requests/{request_id}/withdraw": {
        "post": operation(
            "withdraw a pending request of yours: it leaves the review queue and stays on "
            "the record as withdrawn; 409 when it is decided already",
            RequestOutcome,
        ),
        "parameters": path_params("request_id"),
    },
    "/api/v1/reviews": {
        "get": operation(
            "pending requests of the organisations you review for, with the "
            "researcher's verified facts",
            ReviewQueue,
        ),
    },
    "/api/v1/grants": {"get": GRANTS},
    "/api/v1/grants/{grant_id}/revoke": {
        "post": operation(
            "revoke a grant at once, with the renewals continuing it (reviewer or admin of "
            "its organisation)",
            GrantView,
        ),
        "parameters": path_params("grant_id"),
    },
    "/api/v1/grants/{grant_id}/renew": {
        "post": RENEW,
        "parameters": path_params("grant_id"),
    },
    "/api/v1/grants/{grant_id}/files/{index}/release": {
        "post": operation(
            "release a file's key: a fresh age header for the grant's pinned key "
            "and a short-lived URL of the payload (the grant's researcher only)",
            ReleasedKey,
        ),
        "parameters": path_params("grant_id", "index"),
    },
    "/api/v1/grants/{grant_id}/closeout": {
        "get": operation(
            "the close-out of a grant of yours: the exact message to attest (and sign), when "
            "the grant ended, and whether the close-out was made",
            CloseoutView,
        ),
        "post": CLOSE,
        "parameters": path_params("grant_id"),
    },
    "/api/v1/grants/{grant_id}/manifest": {
        "get": operation(
            "the deposit's manifest.json text and its signature (manifest.sig)",
            SignedManifest,
        ),
        "parameters": path_params("grant_id"),
    },
}


def _ask_body() -> dict:
    body = json_body()
    return {
        "model": body.get("model"),
        "version": body.get("version"),
        "days": body.get("days"),
        "key_id": body.get("key_id"),
        "kind": body.get("kind"),
    }


@bp.post("/requests")
def create_request() -> tuple[Response, int]:
    actor = caller()  # authenticate before reading the body
    body = json_body()
    policy_dir = escrow().settings.policy_dir
    with escrow().uow() as uow:
        try:
            made = service.create_request(
                uow, actor, policy_dir, purpose=body.get("purpose"), **_ask_body()
            )
        except service.RequestRefused as refused:
            return _refused(refused), refused.status
        return jsonify(service.outcome(uow, made)), 201


def _refused(refused: service.RequestRefused) -> Response:
    """problem+json, with the recorded request and what is missing as extension members."""
    response = problem(refused.status, refused.title, refused.message, refused.hint)
    body = json.loads(response.get_data())
    body["request_id"] = refused.request.id
    body["decision"] = service.describe_decision(refused.decision)
    response.set_data(json.dumps(body))
    return response


@bp.post("/requests/explain")
def explain() -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(service.explain(uow, actor, escrow().settings.policy_dir, **_ask_body()))


@bp.get("/requests")
def my_requests() -> Response:
    actor = caller()
    with escrow().uow() as uow:
        made = service.my_requests(uow, actor)
        answer: RequestList = {"requests": [service.describe_request(uow, r) for r in made]}
        return jsonify(answer)


@bp.get("/requests/<request_id>")
def show_request(request_id: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        found = service.visible_request(uow, actor, request_id)
        reviewer = str(found.user_id) != actor.id
        return jsonify(
            service.describe_request(
                uow, found, for_reviewer=reviewer, policy_dir=escrow().settings.policy_dir
            )
        )


@bp.post("/requests/<request_id>/approve")
def approve(request_id: str) -> Response:
    return _decide(request_id, approve=True)


@bp.post("/requests/<request_id>/deny")
def deny(request_id: str) -> Response:
    return _decide(request_id, approve=False)


def _decide(request_id: str, *, approve: bool) -> Response:
    actor = caller()
    comment = json_body(optional=True).get("comment")
    policy_dir = escrow().settings.policy_dir
    with escrow().uow() as uow:
        decided, _ = service.decide(uow, actor, policy_dir, request_id, approve, comment)
        return jsonify(service.outcome(uow, decided, for_reviewer=True, policy_dir=policy_dir))


@bp.post("/requests/<request_id>/withdraw")
def withdraw(request_id: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(service.outcome(uow, service.withdraw(uow, actor, request_id)))


@bp.get("/reviews")
def reviews() -> Response:
    actor = caller()
    policy_dir = escrow().settings.policy_dir
    with escrow().uow() as uow:
        orgs, pending = service.pending_reviews(uow, actor)
        answer: ReviewQueue = {
            "orgs": orgs,
            "requests": [
                service.describe_request(uow, r, for_reviewer=True, policy_dir=policy_dir)
                for r in pending
            ],
        }
        return jsonify(answer)


@bp.get("/grants")
def list_grants() -> Response:
    actor = caller()
    org = request.args.get("org")
    with escrow().uow() as uow:
        found = grants.org_grants(uow, actor, org) if org else grants.my_grants(uow, actor)
        days = escrow().settings.closeout_overdue_days
        answer: GrantList = {"grants": closeouts.with_closeouts(uow, found, days)}
        return jsonify(answer)


@bp.post("/grants/<grant_id>/revoke")
def revoke(grant_id: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(grants.describe(uow, grants.revoke(uow, actor, grant_id)))


@bp.post("/grants/<grant_id>/renew")
def renew(grant_id: str) -> tuple[Response, int]:
    actor = caller()  # authenticate before reading the body
    body = json_body(optional=True)
    policy_dir = escrow().settings.policy_dir
    with escrow().uow() as uow:
        try:
            made = service.request_renewal(
                uow, actor, policy_dir, grant_id, body.get("days"), body.get("purpose")
            )
        except service.RequestRefused as refused:
            return _refused(refused), refused.status
        return jsonify(service.outcome(uow, made)), 201


@bp.post("/grants/<grant_id>/files/<int:index>/release")
def release(grant_id: str, index: int) -> Response:
    with escrow().uow() as uow:
        actor = caller(uow)  # the hottest call: authenticated in its own transaction
        return jsonify(grant_release.release_key(escrow(), uow, actor, grant_id, index))


@bp.get("/grants/<grant_id>/manifest")
def manifest(grant_id: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(grant_release.manifest(escrow(), uow, actor, grant_id))


@bp.get("/grants/<grant_id>/closeout")
def closeout(grant_id: str) -> Response:
    actor = caller()
    with escrow().uow() as uow:
        return jsonify(closeouts.message(uow, actor, grant_id))


@bp.post("/grants/<grant_id>/closeout")
def close(grant_id: str) -> tuple[Response, int]:
    actor = caller()  # authenticate before reading the body
    body = json_body()
    with escrow().uow() as uow:
        made, created = closeouts.close(
            uow,
            actor,
            grant_id,
            body.get("attest_deleted"),
            body.get("typed_name"),
            body.get("ssh_signature"),
        )
        return jsonify(made), 201 if created else 200
