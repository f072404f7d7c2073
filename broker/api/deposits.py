"""JSON API for deposits: translate HTTP to service calls and back, nothing else."""

from __future__ import annotations

import base64
import binascii

from flask import Blueprint, Response, jsonify

from broker.domain.access import Action
from broker.errors import InvalidInput
from broker.http.common import (
    body_limit,
    caller,
    escrow,
    flag_field,
    json_body,
    text_field,
    text_list_field,
)
from broker.http.openapi import BOOLEAN, INTEGER, STRING, array, obj, operation, path_params
from broker.services import deposit_uploads as uploads
from broker.services import deposits as service
from broker.services.views_types import (
    DepositView,
    FileCompleted,
    HeaderRegistered,
    PresignedParts,
    UploadStart,
)

bp = Blueprint("deposits", __name__, url_prefix="/api/v1/deposits")
# A deposit's file list: tens of thousands of {path, size} entries, more than other JSON bodies.
OPEN_BODY_LIMIT = 8 * 1024 * 1024

FILE = path_params("deposit_id", "index")
OPENAPI = {
    "/api/v1/deposits": {
        "post": operation(
            "open a deposit of a model version, or resume the existing one",
            DepositView,
            obj(
                model=STRING,
                version=STRING,
                classical=BOOLEAN,
                extra_recipients=array(STRING),
                files=array(obj(path=STRING, size=INTEGER)),
            ),
        )
    },
    "/api/v1/deposits/{deposit_id}": {
        "get": operation("a deposit and its files", DepositView),
        "parameters": path_params("deposit_id"),
    },
    "/api/v1/deposits/{deposit_id}/files/{index}/upload": {
        "post": operation(
            "start or resume a file's multipart upload (a new one, and upload_lost, when the "
            "store no longer knows the old one: encrypt the file again under a new key)",
            UploadStart,
            obj(restart=BOOLEAN),
        ),
        "parameters": FILE,
    },
    "/api/v1/deposits/{deposit_id}/files/{index}/parts": {
        "post": operation(
            "presigned URLs for parts", PresignedParts, obj(numbers=array(INTEGER))
        ),
        "parameters": FILE,
    },
    "/api/v1/deposits/{deposit_id}/files/{index}/header": {
        "put": operation(
            "register the file's age header (must open with the escrow identity)",
            HeaderRegistered,
            body=obj(header={"type": "string", "contentEncoding": "base64"}),
        ),
        "parameters": FILE,
    },
    "/api/v1/deposits/{deposit_id}/files/{index}/complete": {
        "post": operation(
            "assemble the parts, check sizes, record the plaintext SHA-256; `parts` (each "
            "part's number, size and the ETag its PUT answered) is used where the store cannot "
            "list parts",
            FileCompleted,
            body=obj(
                sha256=STRING,
                parts=array(obj(number=INTEGER, size=INTEGER, etag=STRING)),
            ),
        ),
        "parameters": FILE,
    },
    "/api/v1/deposits/{deposit_id}/finalize": {
        "post": operation(
            "queue verification; the worker seals the deposit", DepositView, status="202"
        ),
        "parameters": path_params("deposit_id"),
    },
}


@bp.post("")
@body_limit(OPEN_BODY_LIMIT)
def open_deposit() -> tuple[Response, int]:
    actor = caller()  # authenticate before reading the body
    body = json_body()
    with escrow().uow() as uow:
        deposit = service.open_deposit(
            escrow(),
            uow,
            actor,
            text_field(body, "model"),
            text_field(body, "version"),
            body.get("files"),  # checked after the caller's role (service.parse_plan)
            classical=flag_field(body, "classical"),
            extra_recipients=text_list_field(body, "extra_recipients"),
        )
        return jsonify(service.describe(deposit)), 200


@bp.get("/<deposit_id>")
def show(deposit_id: str) -> Response:
    actor = caller()  # authenticate before reading the body
    with escrow().uow() as uow:
        return jsonify(
            service.describe(service.get_deposit(uow, actor, deposit_id, Action.DEPOSIT_READ))
        )


@bp.post("/<deposit_id>/files/<int:index>/upload")
def start_upload(deposit_id: str, index: int) -> Response:
    actor = caller()  # authenticate before reading the body
    restart = bool(json_body(optional=True).get("restart", False))
    with escrow().uow() as uow:
        return jsonify(uploads.start_upload(escrow(), uow, actor, deposit_id, index, restart))


@bp.post("/<deposit_id>/files/<int:index>/parts")
def presign_parts(deposit_id: str, index: int) -> Response:
    actor = caller()  # authenticate before reading the body
    numbers = json_body().get("numbers")
    with escrow().uow() as uow:
        answer: PresignedParts = {
            "parts": uploads.presign_parts(escrow(), uow, actor, deposit_id, index, numbers)
        }
        return jsonify(answer)


@bp.put("/<deposit_id>/files/<int:index>/header")
def register_header(deposit_id: str, index: int) -> Response:
    actor = caller()  # authenticate before reading the body
    try:
        header = base64.b64decode(text_field(json_body(), "header", ""), validate=True)
    except (binascii.Error, ValueError):  # ValueError: characters outside ASCII
        raise InvalidInput(
            "'header' must be base64 (ASCII letters, digits, '+', '/', '=')",
            hint="base64-encode the header bytes",
        ) from None
    with escrow().uow() as uow:
        return jsonify(uploads.register_header(escrow(), uow, actor, deposit_id, index, header))


@bp.post("/<deposit_id>/files/<int:index>/complete")
@body_limit(OPEN_BODY_LIMIT)  # up to 10,000 parts listed
def complete(deposit_id: str, index: int) -> Response:
    actor = caller()  # authenticate before reading the body
    body = json_body()
    sha256 = text_field(body, "sha256", "")
    with escrow().uow() as uow:
        return jsonify(
            uploads.complete_upload(
                escrow(), uow, actor, deposit_id, index, sha256, body.get("parts")
            )
        )


@bp.post("/<deposit_id>/finalize")
def finalize(deposit_id: str) -> tuple[Response, int]:
    actor = caller()  # authenticate before reading the body
    with escrow().uow() as uow:
        deposit = service.finalize(escrow(), uow, actor, deposit_id)
        return jsonify(service.describe(deposit)), 202
