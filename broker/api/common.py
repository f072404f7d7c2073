"""What every API view shares: the escrow container, the caller, JSON bodies, problem+json."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request, session
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from broker.adapters.db.uow import UnitOfWork, database_unavailable
from broker.container import Escrow
from broker.domain.principals import Principal
from broker.errors import BadRequest, EscrowError, OutcomeUnknown, Unauthorized
from broker.services.sessions import authenticate_bearer, live_session, principal_of

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def escrow() -> Escrow:
    return current_app.extensions["escrow"]


def caller(uow: UnitOfWork | None = None) -> Principal:
    """The authenticated principal of this request: a bearer secret (service token or a
    person's access token), else the login session of the browser's cookie. Looked up in the
    view's own transaction `uow` if given (the hottest calls spare a transaction), else in one
    of its own."""
    if "principal" not in g:
        if uow is None:
            with escrow().uow() as own:
                g.principal = _identify(own)
        else:
            g.principal = _identify(uow)
    return g.principal


def optional_caller() -> Principal | None:
    try:
        return caller()
    except Unauthorized:
        return None


def _identify(uow: UnitOfWork) -> Principal:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return authenticate_bearer(uow, token)
    session_id = session.get("login_session")
    live = live_session(uow, session_id) if isinstance(session_id, str) else None
    if live is not None:
        return principal_of(uow, live)
    raise Unauthorized(
        "this call needs you to log in or present a token",
        hint="log in at /auth/login, or send 'Authorization: Bearer <token>' "
        "(CLI: escrow login, or --token / --token-file)",
    )


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest(
            "the request body must be a JSON object",
            hint="send Content-Type: application/json with an object body",
        )
    return body


def problem(
    status: int,
    title: str,
    detail: str,
    hint: str = "",
    *,
    type_: str = "about:blank",
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if hint:
        body["hint"] = hint
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="weights-escrow"'
    return response


def problem_response(error: EscrowError, **extra: Any) -> Response:
    """`error` as problem+json; an unknown outcome names the Idempotency-Key to retry with
    (or, without one, says to look before making the change again)."""
    if error.status >= 500:
        log.warning("%s: %s", error.title, error.message)
    hint = error.hint
    if isinstance(error, OutcomeUnknown) and "idempotency_key" not in extra:
        hint = (
            "look whether the change was made (e.g. GET the resource) before making it again; "
            "send an Idempotency-Key header to make such retries safe"
        )
    type_ = getattr(error, "type", "about:blank")
    return problem(error.status, error.title, error.message, hint, type_=type_, **extra)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(EscrowError)
    def escrow_error(error: EscrowError) -> Response:
        key = request.headers.get("Idempotency-Key")
        return problem_response(error, **({"idempotency_key": key} if key else {}))

    @app.errorhandler(OperationalError)
    def database_error(error: OperationalError) -> Response:
        return escrow_error(database_unavailable(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return problem(error.code or 500, (error.name or "error").lower(), error.description or "")

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unexpected error")
        return problem(
            500,
            "internal error",
            "the broker failed unexpectedly",
            "retry; if it persists, tell the operator (details are in the server log)",
        )
