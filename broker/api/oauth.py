"""The OAuth endpoints of CLI login: device authorization (RFC 8628), token (RFC 6749 §5, for
the device code and refresh token grants) and revocation (RFC 7009).

Requests are form-encoded and answers are RFC 6749 JSON, errors included
(`{"error": …, "error_description": …}`, `Cache-Control: no-store`): OAuth clients expect that,
not problem+json. Views only translate; `broker.services.device` decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authlib.consts import default_json_headers
from authlib.oauth2.base import OAuth2Error
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidRequestError,
    UnsupportedGrantTypeError,
)
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE
from flask import Blueprint, Response, jsonify, request

from broker.http.common import escrow
from broker.http.openapi import STRING, obj
from broker.services import device as service
from broker.services.sessions import TokenPair
from broker.services.views_types import (
    DeviceStart,
    OAuthErrorAnswer,
    Revoked,
    TokenAnswer,
)

bp = Blueprint("oauth", __name__, url_prefix="/oauth")

FORM = "application/x-www-form-urlencoded"
OAUTH_ERROR = {
    "description": "RFC 6749 §5.2 error",
    "content": {"application/json": {"schema": OAuthErrorAnswer}},
}


def _form_operation(
    summary: str, fields: dict[str, Any], required: list[str], ok: type
) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [],
        "requestBody": {
            "required": True,
            "content": {FORM: {"schema": {**obj(**fields), "required": required}}},
        },
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ok}}},
            "400": OAUTH_ERROR,
            "401": OAUTH_ERROR,
        },
    }


OPENAPI = {
    "/oauth/device_authorization": {
        "post": _form_operation(
            "start a CLI login (RFC 8628 §3.1): a device code and a user code to approve at "
            "verification_uri",
            {"client_id": {"const": service.CLIENT_ID}, "scope": STRING},
            ["client_id"],
            DeviceStart,
        )
    },
    "/oauth/token": {
        "post": _form_operation(
            "exchange an approved device code (once) or a refresh token (rotated) for tokens; "
            "errors: authorization_pending, slow_down, access_denied, expired_token, "
            "invalid_grant",
            {
                "grant_type": {"enum": [DEVICE_CODE_GRANT_TYPE, "refresh_token"]},
                "client_id": {"const": service.CLIENT_ID},
                "device_code": STRING,
                "refresh_token": STRING,
            },
            ["grant_type", "client_id"],
            TokenAnswer,
        )
    },
    "/oauth/revoke": {
        "post": _form_operation(
            "end the login session of an access or refresh token, all its tokens (RFC 7009)",
            {
                "token": STRING,
                "token_type_hint": {"enum": ["access_token", "refresh_token"]},
                "client_id": {"const": service.CLIENT_ID},
            },
            ["token", "client_id"],
            Revoked,
        )
    },
}


@bp.post("/device_authorization")
def device_authorization() -> Response:
    with escrow().uow() as uow:
        started = service.start(
            uow, _client_id(), _param("scope") or "", escrow().settings.public_url
        )
    return _answer(started)


@bp.post("/token")
def token() -> Response:
    grant_type, client_id = _param("grant_type"), _client_id()
    with escrow().uow() as uow:
        if grant_type == DEVICE_CODE_GRANT_TYPE:
            pair = service.poll(uow, client_id, _param("device_code"))
        elif grant_type == "refresh_token":
            pair = service.refresh(uow, client_id, _param("refresh_token"))
        elif not grant_type:
            raise InvalidRequestError("grant_type is missing")
        else:
            raise UnsupportedGrantTypeError(
                f"this broker serves the grant types {DEVICE_CODE_GRANT_TYPE} and refresh_token"
            )
    return _answer(_token_response(pair))


@bp.post("/revoke")
def revoke() -> Response:
    with escrow().uow() as uow:
        service.revoke(uow, _client_id(), _param("token"))
    revoked: Revoked = {}
    return _answer(revoked)


def _token_response(pair: TokenPair) -> TokenAnswer:
    return {
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
    }


def _param(name: str) -> str | None:
    values = request.form.getlist(name)
    if len(values) > 1:  # RFC 6749 §3.1: parameters MUST NOT be included more than once
        raise InvalidRequestError(f"{name} is given more than once")
    return values[0] if values else None


def _client_id() -> str | None:
    if request.authorization is not None:
        # The CLI is a public client; a client authenticating with a secret is not one of ours.
        raise InvalidClientError("the broker has no confidential clients", status_code=401)
    return _param("client_id")


def _answer(
    body: Mapping[str, Any], status: int = 200, headers: list[tuple[str, str]] | None = None
) -> Response:
    response = jsonify(body)
    response.status_code = status
    for name, value in headers or default_json_headers:
        response.headers[name] = value
    return response


@bp.errorhandler(OAuth2Error)
def oauth_error(error: OAuth2Error) -> Response:
    status, body, headers = error()
    return _answer(body, status, headers)
