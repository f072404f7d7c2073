"""What every API view shares: the escrow container, the caller, JSON bodies, problem+json."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, jsonify, request, session
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from broker.adapters.db.uow import UnitOfWork, database_unavailable
from broker.container import Escrow
from broker.domain.principals import Principal
from broker.errors import (
    BadRequest,
    EscrowError,
    InvalidInput,
    OutcomeUnknown,
    PayloadTooLarge,
    Unauthorized,
)
from broker.services.sessions import authenticate_bearer, live_session, principal_of

log = logging.getLogger(__name__)
View = TypeVar("View", bound=Callable[..., Any])
PROBLEM = "application/problem+json"
# The largest request body (JSON, forms) the broker reads; more is refused with 413 before it is
# read. A route may allow more (`@body_limit(…)`); a part upload is limited to its part.
MAX_BODY_BYTES = 1024 * 1024
LARGEST_INT = 2**63 - 1
_PATH_INT_MOST = {"index": 2**31 - 1}  # a file's number is a 32-bit column


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


def body_limit(limit: int) -> Callable[[View], View]:
    """Mark a view whose body may be larger than `MAX_BODY_BYTES` (set before any view or
    hook reads the body, by `check_request_values`)."""

    def mark(view: View) -> View:
        view.body_limit = limit  # type: ignore[attr-defined]
        return view

    return mark


def json_body(*, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object, read only once the caller is authenticated: an anonymous
    request is answered 401 without a byte of its body read, whatever it sends. `optional`: an
    empty body is `{}`. Every string is valid Unicode without NUL, and every integer fits 64
    bits (else 422 naming the field), so a malformed value never reaches a service or the
    database."""
    caller()
    if not request.is_json:
        if optional and not request.content_length:
            return {}
        raise BadRequest(
            "the request body must be a JSON object",
            hint="send Content-Type: application/json with an object body",
        )
    data = request.get_data(cache=True)  # 413 past the limit, before reading (Content-Length)
    if optional and not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise BadRequest(
            "the request body is not valid JSON (UTF-8, nested at most a few hundred deep)",
            hint="send Content-Type: application/json with an object body",
        ) from None
    if not isinstance(body, dict):
        raise BadRequest(
            "the request body must be a JSON object",
            hint="send Content-Type: application/json with an object body",
        )
    check_values(body, "")
    return body


def text_field(body: dict[str, Any], name: str, default: str | None = None) -> str:
    """`body[name]` as a string; absent: `default`, or 422 if there is none. Never `str()` of
    another type (a `null` version must not become "None")."""
    value = body.get(name, default)
    if not isinstance(value, str):
        raise InvalidInput(
            f"'{name}' must be a string, not {_json_type(value)}"
            if name in body
            else f"'{name}' is missing",
            hint=f'send "{name}" as a JSON string',
        )
    return value


def flag_field(body: dict[str, Any], name: str, default: bool = False) -> bool:
    """`body[name]` as a boolean (absent: `default`); 422 for any other type."""
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(
            f"'{name}' must be true or false, not {_json_type(value)}",
            hint=f'send "{name}" as a JSON boolean',
        )
    return value


def text_list_field(body: dict[str, Any], name: str) -> list[str]:
    """`body[name]` as a list of strings (absent or null: empty); 422 naming the field else."""
    value = body.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(
            f"'{name}' must be a list of strings, not {_json_type(value)}",
            hint=f'send "{name}" as a JSON array of strings, e.g. ["age1…"]',
        )
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list" if all(isinstance(v, str) for v in value) else "a list of other types"
    return "an object"


def check_values(value: object, where: str) -> None:
    """Refuse (422, naming the field) a string with NUL or a lone surrogate, and an integer
    past 64 bits, anywhere in `value`: no column, key or path can hold them."""
    stack: list[tuple[object, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            _check_text(item, at)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not -LARGEST_INT - 1 <= item <= LARGEST_INT:
                raise InvalidInput(
                    f"{_field(at)} is {_abbreviated(str(item))}, past a 64-bit integer",
                    hint=f"send a number between {-LARGEST_INT - 1} and {LARGEST_INT}",
                )
        elif isinstance(item, dict):
            for key, member in item.items():
                _check_text(key, f"{at}.{key}" if at else key)
                stack.append((member, f"{at}.{key}" if at else key))
        elif isinstance(item, list):
            stack.extend((member, f"{at}[{n}]") for n, member in enumerate(item))


def _check_text(text: str, at: str) -> None:
    if "\x00" in text:
        raise InvalidInput(f"{_field(at)} contains a NUL character", hint="remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            f"{_field(at)} is not valid Unicode (it has a lone UTF-16 surrogate)",
            hint="send text as UTF-8; a \\uD800-\\uDFFF escape must be half of a pair",
        ) from None


def _field(at: str) -> str:
    if not at:
        return "the body"
    return f"'{_abbreviated(at.encode('utf-8', 'backslashreplace').decode())}'"


def _abbreviated(text: str, most: int = 60) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def check_request_values() -> None:
    """`before_request` of the app: path and query parameters obey `check_values` too (a NUL
    in a path id or `?actor=`, a number past 64 bits in `<int:…>`), before any view runs; and
    the route's own body limit (`body_limit`) holds from here on."""
    view = current_app.view_functions.get(request.endpoint or "")
    limit = getattr(view, "body_limit", None)
    if limit is not None:
        request.max_content_length = limit
    for name, value in (request.view_args or {}).items():
        check_values(value, f"path parameter {name}")
        most = _PATH_INT_MOST.get(name)
        if most is not None and isinstance(value, int) and value > most:
            raise InvalidInput(
                f"'path parameter {name}' is {_abbreviated(str(value))}, past the largest "
                f"there can be ({most})",
                hint="check the number (a deposit lists its files with their index)",
            )
    for name, value in request.args.items(multi=True):
        check_values(name, "query parameter name")
        check_values(value, f"query parameter {name}")


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


def body_too_large() -> PayloadTooLarge:
    """The 413 of a body past this request's limit, saying the limit and what to send."""
    limit, sent = request.max_content_length, request.content_length
    size = f"{sent} bytes" if sent is not None else "larger than that (it was sent chunked)"
    return PayloadTooLarge(
        f"{request.method} {request.path} takes a body of at most {limit} bytes; this one is "
        f"{size}, and was not read",
        hint="JSON bodies are small: send only the fields the API names (a part of a file goes "
        "to its own upload URL, at its part's size)",
    )


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(EscrowError)
    def escrow_error(error: EscrowError) -> Response:
        key = request.headers.get("Idempotency-Key")
        return problem_response(error, **({"idempotency_key": key} if key else {}))

    @app.errorhandler(OperationalError)
    def database_error(error: OperationalError) -> Response:
        return escrow_error(database_unavailable(error))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge) -> Response:
        return escrow_error(body_too_large())

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        response = problem(
            error.code or 500, (error.name or "error").lower(), error.description or ""
        )
        for name, value in error.get_headers():  # e.g. a 405's Allow, which HTTP requires
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unexpected error")
        return problem(
            500,
            "internal error",
            "the broker failed unexpectedly",
            "retry; if it persists, tell the operator (details are in the server log)",
        )
