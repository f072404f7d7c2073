"""Release agreements of model versions: show, attach or amend, vote, release early, check in."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from broker.http.common import caller, escrow, json_body
from broker.http.openapi import STRING, obj, operation, path_params
from broker.services import agreements as service
from broker.services.views_types import (
    AgreementAttached,
    AgreementCheckinView,
    AgreementRemoved,
    AgreementView,
    AgreementVoteChallengeView,
    AgreementVoteMessage,
    AgreementVoteResult,
    AgreementVoteWithdrawn,
)

bp = Blueprint("agreements", __name__, url_prefix="/api/v1")

VERSION = path_params("org", "model", "version")
VOTE_OPERATION = operation(
    "a trustee's vote to release (or, with proposal_sha256, for one amendment text), after a "
    "fresh login, proven either by ssh_signature (ssh-keygen -Y sign -n escrow-agreement over "
    "the vote message) or by challenge and response (the secret of a vote challenge, "
    "decrypted); 201 when new, 200 when you had voted so already",
    AgreementVoteResult,
    obj(ssh_signature=STRING, challenge=STRING, response=STRING, proposal_sha256=STRING),
    status="201",
)
VOTE_OPERATION["responses"]["200"] = VOTE_OPERATION["responses"]["201"]
MESSAGE_OPERATION = operation(
    "the exact text a trustee signs to vote (?proposal_sha256= for an amendment)",
    AgreementVoteMessage,
    auth=False,
)
MESSAGE_OPERATION["parameters"] = [
    {"name": "proposal_sha256", "in": "query", "required": False, "schema": STRING}
]
PATH = "/api/v1/agreements/{org}/{model}/{version}"
OPENAPI = {
    PATH: {
        "parameters": VERSION,
        "get": operation(
            "a version's release agreement: in words, its state (sealed or released: TRIGGER), "
            "what each trigger still misses, the lab's last check-in and the trustees' votes",
            AgreementView,
            auth=False,
        ),
        "put": operation(
            "attach the version's release agreement (depositor or admin, before the seal), or "
            "amend it (admin, or a trustee the agreement in force names, after the seal: only "
            "as its own amendment rule allows; a refusal is logged)",
            AgreementAttached,
            obj(text=STRING),
        ),
        "delete": operation(
            "remove the agreement: only before the seal; after it, refused and logged",
            AgreementRemoved,
        ),
    },
    PATH + "/votes": {
        "parameters": VERSION,
        "post": VOTE_OPERATION,
    },
    PATH + "/vote-challenges": {
        "parameters": VERSION,
        "post": operation(
            "a challenge for a trustee's vote (to release, or with proposal_sha256 for one "
            "amendment text), after a fresh login: a fresh secret bound to the vote message, "
            "encrypted to a proven key of yours (key: its id or public key; may be left out "
            "with one key), single use, expiring in 15 minutes",
            AgreementVoteChallengeView,
            obj(key=STRING, proposal_sha256=STRING),
            status="201",
        ),
    },
    PATH + "/votes/withdraw": {
        "parameters": VERSION,
        "post": operation(
            "withdraw your vote, until the release it counts toward has fired",
            AgreementVoteWithdrawn,
            obj(proposal_sha256=STRING),
        ),
    },
    PATH + "/vote-message": {
        "parameters": VERSION,
        "get": MESSAGE_OPERATION,
    },
    PATH + "/release": {
        "parameters": VERSION,
        "post": operation(
            "the lab's admin releases the version early (the lab_release condition)",
            AgreementView,
        ),
    },
    "/api/v1/orgs/{org}/checkins": {
        "parameters": path_params("org"),
        "post": operation(
            "the lab checks in (org admin): every lab_silence trigger of its agreements "
            "starts again",
            AgreementCheckinView,
        ),
    },
}


def _model(org: str, model: str) -> str:
    return f"{org}/{model}"


@bp.get("/agreements/<org>/<model>/<version>")
def show(org: str, model: str, version: str) -> Response:
    with escrow().uow() as uow:
        return jsonify(service.show(uow, _model(org, model), version))


@bp.put("/agreements/<org>/<model>/<version>")
def attach(org: str, model: str, version: str) -> Response:
    body = json_body()
    with escrow().uow() as uow:
        row, outcome = service.attach(
            escrow(), uow, caller(), _model(org, model), version, body.get("text")
        )
        return jsonify({"outcome": outcome, "agreement": service.describe(uow, row.deposit, row)})


@bp.delete("/agreements/<org>/<model>/<version>")
def remove(org: str, model: str, version: str) -> Response:
    with escrow().uow() as uow:
        service.remove(escrow(), uow, caller(), _model(org, model), version)
    return jsonify(AgreementRemoved(removed=True))


@bp.get("/agreements/<org>/<model>/<version>/vote-message")
def vote_message(org: str, model: str, version: str) -> Response:
    with escrow().uow() as uow:
        message = service.message_for(
            uow, _model(org, model), version, request.args.get("proposal_sha256")
        )
    return jsonify(AgreementVoteMessage(message=message, namespace=service.NAMESPACE))


@bp.post("/agreements/<org>/<model>/<version>/vote-challenges")
def vote_challenge(org: str, model: str, version: str) -> tuple[Response, int]:
    body = json_body(optional=True)
    with escrow().uow() as uow:
        made, armored = service.vote_challenge(
            uow,
            caller(),
            _model(org, model),
            version,
            body.get("proposal_sha256"),
            body.get("key"),
            escrow().settings.origin,
        )
        view = AgreementVoteChallengeView(
            id=made.id,
            challenge=armored.decode("ascii"),
            key=made.key_id,
            message=made.message,
            expires_at=made.expires_at.isoformat(),
        )
    return jsonify(view), 201


@bp.post("/agreements/<org>/<model>/<version>/votes")
def vote(org: str, model: str, version: str) -> tuple[Response, int]:
    body = json_body()
    name = _model(org, model)
    with escrow().uow() as uow:
        if "challenge" in body or "response" in body:
            ballot, created = service.vote_by_challenge(
                escrow(),
                uow,
                caller(),
                name,
                version,
                body.get("challenge"),
                body.get("response"),
                body.get("proposal_sha256"),
            )
        else:
            ballot, created = service.vote(
                escrow(),
                uow,
                caller(),
                name,
                version,
                body.get("ssh_signature"),
                body.get("proposal_sha256"),
            )
        result = AgreementVoteResult(
            vote=service.describe_vote(ballot),
            created=created,
            agreement=service.show(uow, name, version),
        )
        return jsonify(result), 201 if created else 200


@bp.post("/agreements/<org>/<model>/<version>/votes/withdraw")
def withdraw(org: str, model: str, version: str) -> Response:
    body = json_body(optional=True)
    name = _model(org, model)
    with escrow().uow() as uow:
        ballot = service.withdraw(uow, caller(), name, version, body.get("proposal_sha256"))
        withdrawn = AgreementVoteWithdrawn(
            vote=service.describe_vote(ballot), agreement=service.show(uow, name, version)
        )
        return jsonify(withdrawn)


@bp.post("/agreements/<org>/<model>/<version>/release")
def release(org: str, model: str, version: str) -> Response:
    name = _model(org, model)
    with escrow().uow() as uow:
        service.lab_release(escrow(), uow, caller(), name, version)
        return jsonify(service.show(uow, name, version))


@bp.post("/orgs/<org>/checkins")
def checkin(org: str) -> Response:
    with escrow().uow() as uow:
        row = service.checkin(uow, caller(), org)
        return jsonify(AgreementCheckinView(org=org, at=row.created_at.isoformat()))
