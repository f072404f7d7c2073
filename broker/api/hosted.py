"""Hosted access: the OpenAI-compatible API, and the model workers' registration.

GET  /v1/models                                  the versions the caller may query
POST /v1/completions, /v1/chat/completions       forwarded to a live worker (stream: SSE)
POST /v1/embeddings                              forwarded likewise (encoder models)
POST   /api/v1/hosted/workers                    a worker registers (its own login)
POST   /api/v1/hosted/workers/<id>/heartbeat     with its secret (X-Escrow-Worker-Secret)
DELETE /api/v1/hosted/workers/<id>               deregisters, with its secret

/v1 answers errors as OpenAI clients expect them ({"error": {message, type, code}}), not as
problem+json. Each query is authorised and routed afresh (broker.services.hosted.route), so a
revoked grant stops the next request. Every forwarded call has a timeout; a worker that does
not answer is skipped for the next live one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from flask import Blueprint, Response, jsonify, request, stream_with_context

from broker.adapters.db.uow import UnitOfWork
from broker.domain import studies as exchanges
from broker.domain.clock import now
from broker.domain.hosting import internals_asked
from broker.domain.principals import Principal, PrincipalKind
from broker.domain.secrets import prefix_of
from broker.errors import EscrowError, InvalidInput
from broker.hosting.server import SECRET_HEADER, error_response
from broker.http.common import caller, escrow, json_body, problem_response
from broker.http.openapi import STRING, obj, operation, path_params
from broker.services import hosted as service
from broker.services import hosted_keys, hosting, study_captures
from broker.services import hosted_usage as usage
from broker.services.views_types import WorkerHeartbeat, WorkerRegistration, WorkerStopped

bp = Blueprint("hosted", __name__)
log = logging.getLogger(__name__)

HOSTED = {"type": "object"}  # OpenAI's own schemas: https://platform.openai.com/docs/api-reference
# OpenAI's error body, not problem+json, on the /v1 routes: the clients people use read it.
OPENAI_ERROR = {
    "description": "an error in OpenAI's shape (429 with Retry-After)",
    "content": {"application/json": {"schema": obj(error=obj(
        message=STRING, type=STRING, code=STRING, param={"type": ["string", "null"]},
        hint=STRING))}},
}


def _openai(summary: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """An operation of the OpenAI-compatible API: its errors are OpenAI's, not problem+json."""
    answer = operation(summary, HOSTED, body)
    answer["responses"]["default"] = OPENAI_ERROR
    return answer


OPENAPI = {
    "/v1/models": {"get": _openai("OpenAI-compatible: the versions you may query")},
    "/v1/completions": {"post": _openai(
        "OpenAI-compatible completion of a hosted version (stream: server-sent events), "
        "under your active inference grant or its API key (logprobs, and the extension field "
        "escrow_views for hidden states and attention of named layers: an internals grant)",
        HOSTED)},
    "/v1/chat/completions": {"post": _openai(
        "OpenAI-compatible chat completion of a hosted version (stream: server-sent events), "
        "under your active inference grant or its API key (logprobs, and the extension field "
        "escrow_views for hidden states and attention of named layers: an internals grant)",
        HOSTED)},
    "/v1/embeddings": {"post": _openai(
        "OpenAI-compatible embeddings of texts by a hosted encoder version, under your active "
        "inference grant or its API key", HOSTED)},
    "/api/v1/hosted/workers": {"post": operation(
        "a model worker registers under its hosting grant (the worker's own login)",
        WorkerRegistration, obj(grant_id=STRING, url=STRING), status="201")},
    "/api/v1/hosted/workers/{worker_id}/heartbeat": {
        "parameters": path_params("worker_id"),
        "post": operation("a model worker is alive (X-Escrow-Worker-Secret)", WorkerHeartbeat,
                          auth=False)},
    "/api/v1/hosted/workers/{worker_id}": {
        "parameters": path_params("worker_id"),
        "delete": operation("a model worker stops (X-Escrow-Worker-Secret)", WorkerStopped,
                            auth=False)},
}


def _openai_error(error: EscrowError) -> Response:
    if request.path.startswith("/v1/"):
        response = error_response(error)
        if isinstance(error, usage.QuotaExceeded):
            response.headers["Retry-After"] = str(error.retry_after)
        return response
    return problem_response(error)  # /api/v1: problem+json, as everywhere else


bp.register_error_handler(EscrowError, _openai_error)


# --- the OpenAI-compatible API ----------------------------------------------------------------


def _caller(uow: UnitOfWork) -> tuple[Principal, str | None]:
    """The caller of a /v1 call, and the grant its API key is bound to (None: a login's
    token or session, which may query any of the person's grants)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and prefix_of(token) == hosted_keys.PREFIX:
        found = hosted_keys.authenticate(uow, token)
        return found.principal, found.grant_id
    return caller(uow), None


@bp.get("/v1/models")
def models() -> Response:
    with escrow().uow() as uow:
        actor, key_grant = _caller(uow)
        return jsonify({"object": "list", "data": service.models(uow, actor, key_grant)})


@bp.post("/v1/completions")
def completions() -> Response:
    return _forward("/v1/completions")


@bp.post("/v1/chat/completions")
def chat_completions() -> Response:
    return _forward("/v1/chat/completions")


@bp.post("/v1/embeddings")
def embeddings() -> Response:
    return _forward("/v1/embeddings")


def _forward(path: str) -> Response:
    with escrow().uow() as uow:
        actor, key_grant = _caller(uow)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", hint="send OpenAI's request body")
    with escrow().uow() as uow:
        route = service.route(uow, escrow().worker_key, actor, body.get("model"), key_grant,
                              internals_asked(body, chat=path == "/v1/chat/completions"))
        # consent and study state, in the transaction that routes: a withdrawal stops the next
        targets = (study_captures.capturing(uow, actor.id, route.deposit_id)
                   if path in exchanges.CAPTURED_PATHS and actor.kind == PrincipalKind.USER
                   else ())
        usage.admit(uow, route.grant_id, route.requests_per_minute, route.tokens_per_day)
    body = {**body, "model": route.model}
    stream = bool(body.get("stream"))
    capture = _Capture(targets, route.model, path, body, now()) if targets else None
    answer = service.send(route, path, body, stream)
    return _relay(answer, stream, route.grant_id, capture)


@dataclass(frozen=True)
class _Capture:
    """An exchange to capture for the studies its caller consents to (broker.services.studies)."""

    targets: tuple[study_captures.Target, ...]
    model: str
    endpoint: str
    request: dict[str, Any]
    started_at: datetime

    def store(self, answer: exchanges.Answer) -> None:
        study_captures.capture_all(escrow(), self.targets, model=self.model, endpoint=self.endpoint,
                            request=self.request, answer=answer, started_at=self.started_at)


def _relay(answer: requests.Response, stream: bool, grant_id: str,
           capture: _Capture | None = None) -> Response:
    """The worker's answer to the caller; its `usage` (tokens) counted for the grant; captured
    for the studies the caller consents to (`capture`)."""
    kind = answer.headers.get("Content-Type", "application/json")
    if not stream or answer.status_code != 200:
        _record(grant_id, _usage_of(answer.content) if answer.status_code == 200 else None)
        if capture is not None and answer.status_code == 200:
            capture.store(exchanges.answer_of_body(answer.content))
        return Response(answer.content, status=answer.status_code, content_type=kind)

    def pieces() -> Iterator[bytes]:
        tail = b""  # the stream's last events: the usage comes with the finish reason
        text = exchanges.StreamText() if capture is not None else None
        counted = False
        try:
            for piece in answer.iter_content(chunk_size=None):
                tail = (tail + piece)[-USAGE_TAIL:]
                if text is not None:
                    text.feed(piece)
                if not counted and b"data: [DONE]" in tail:
                    # counted before the caller reads the end: its next request sees the count
                    counted = True
                    _record(grant_id, _usage_of(tail, events=True))
                yield piece
        finally:
            answer.close()
            if not counted:  # cut short: what the stream said so far
                _record(grant_id, _usage_of(tail, events=True))
            if capture is not None and text is not None:
                capture.store(text.finish())

    return Response(stream_with_context(pieces()), status=200, content_type=kind,
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


USAGE_TAIL = 4096  # bytes of a stream's end kept to read its usage (its last two events)


def _usage_of(content: bytes, events: bool = False) -> dict[str, Any] | None:
    """The `usage` of an answer: a JSON body's, or (`events`: the end of a stream, which may
    begin mid-event) the last whole SSE event that has one."""
    texts = [content] if not events else [
        line[5:] for line in content.splitlines() if line.startswith(b"data:")]
    for text in reversed(texts):
        try:
            found = json.loads(text)
        except ValueError:
            continue
        if isinstance(found, dict) and isinstance(found.get("usage"), dict):
            return found["usage"]
    return None


def _record(grant_id: str, found: dict[str, Any] | None) -> None:
    try:
        with escrow().uow() as uow:
            usage.record(uow, grant_id, found)
    except Exception:  # the answer is given already: a lost count must not break it
        log.exception("hosted usage of grant %s was not counted", grant_id)


# --- model workers ----------------------------------------------------------------------------


@bp.post("/api/v1/hosted/workers")
def register() -> tuple[Response, int]:
    actor = caller()
    body: dict[str, Any] = json_body()
    with escrow().uow() as uow:
        answer = hosting.register(
            uow, escrow().worker_key, actor, body.get("grant_id"), body.get("url")
        )
        return jsonify(answer), 201


@bp.post("/api/v1/hosted/workers/<worker_id>/heartbeat")
def heartbeat(worker_id: str) -> Response:
    with escrow().uow() as uow:
        secret = request.headers.get(SECRET_HEADER)
        return jsonify(hosting.heartbeat(uow, escrow().worker_key, worker_id, secret))


@bp.delete("/api/v1/hosted/workers/<worker_id>")
def deregister(worker_id: str) -> Response:
    with escrow().uow() as uow:
        secret = request.headers.get(SECRET_HEADER)
        return jsonify(hosting.deregister(uow, escrow().worker_key, worker_id, secret))
