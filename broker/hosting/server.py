"""The model worker's HTTP server: OpenAI-format completions from its engine, on loopback.

Only the broker calls it: every call must carry the worker's secret (X-Escrow-Worker-Secret),
which the broker sent back at registration; anything else gets 401. The broker has already
authorised the person and checked their grant; the worker only runs the model.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request

from broker.errors import EscrowError, InvalidInput, Unauthorized
from broker.hosting.engine import Engine, Generation, Message, sampling_of

SECRET_HEADER = "X-Escrow-Worker-Secret"  # noqa: S105 (a header's name)


class WorkerState:
    """What the server needs to answer: the engine, the model's name, the secret once known."""

    def __init__(self, engine: Engine, model: str) -> None:
        self.engine, self.model = engine, model
        self.secret: str | None = None
        self.lock = threading.Lock()


def make_app(state: WorkerState) -> Flask:
    app = Flask("escrow-model-worker")

    @app.errorhandler(EscrowError)
    def failed(error: EscrowError) -> Response:
        return error_response(error)

    @app.before_request
    def only_the_broker() -> Response | None:
        presented = request.headers.get(SECRET_HEADER, "")
        if state.secret is None or not secrets.compare_digest(presented, state.secret):
            return error_response(Unauthorized(
                "only the broker calls a model worker", hint="query the broker's /v1 API"))
        return None

    @app.post("/v1/completions")
    def completions() -> Response:
        body = _body()
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise InvalidInput("'prompt' must be a string", hint='e.g. "Once upon a time"')
        generation = state.engine.generate(prompt, sampling_of(body))
        return _answer(state, body, generation, chat=False)

    @app.post("/v1/chat/completions")
    def chat() -> Response:
        body = _body()
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in messages
        ):
            raise InvalidInput(
                "'messages' must be a list of {role, content} with text content",
                hint='e.g. [{"role": "user", "content": "Hello"}]',
            )
        prompt = state.engine.chat_prompt([Message(m["role"], m["content"]) for m in messages])
        generation = state.engine.generate(prompt, sampling_of(body))
        return _answer(state, body, generation, chat=True)

    return app


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", hint="send OpenAI's request body")
    return body


def _answer(
    state: WorkerState, body: dict[str, Any], generation: Generation, chat: bool
) -> Response:
    ident = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    created = int(time.time())
    if body.get("stream"):
        return Response(_events(state.model, ident, created, generation, chat),
                        mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
    text = generation.text()
    choice: dict[str, Any] = {"index": 0, "finish_reason": generation.finish_reason}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice.update(text=text, logprobs=None)
    return jsonify({
        "id": ident,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": state.model,
        "choices": [choice],
        "usage": _usage(generation),
    })


def _events(model: str, ident: str, created: int, generation: Generation,
            chat: bool) -> Iterator[str]:
    """Server-sent events: one chunk per text piece, a last chunk with the finish reason and
    the usage, then [DONE]."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(piece: str | None, finish: str | None, first: bool = False) -> str:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if piece is not None:
                delta["content"] = piece
            choice["delta"] = delta
        else:
            choice.update(text=piece or "", logprobs=None)
        data: dict[str, Any] = {"id": ident, "object": kind, "created": created, "model": model,
                                "choices": [choice]}
        if finish is not None:
            data["usage"] = _usage(generation)
        return f"data: {json.dumps(data)}\n\n"

    if chat:
        yield chunk("", None, first=True)
    for piece in generation:
        yield chunk(piece, None)
    yield chunk(None, generation.finish_reason)
    yield "data: [DONE]\n\n"


def _usage(generation: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
    }


def error_response(error: EscrowError) -> Response:
    """An OpenAI-style error body: {"error": {message, type, code, param}} (and our hint)."""
    response = jsonify({"error": {
        "message": error.message,
        "type": error.title.replace(" ", "_"),
        "code": _CODES.get(error.status, "error"),
        "param": None,
        "hint": error.hint,
    }})
    response.status_code = error.status
    return response


_CODES = {400: "invalid_request", 401: "invalid_api_key", 403: "permission_denied",
          404: "model_not_found", 409: "conflict", 413: "request_too_large",
          429: "rate_limit_exceeded", 503: "service_unavailable", 504: "timeout"}
