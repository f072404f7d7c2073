"""The model worker's HTTP server: OpenAI-format completions from its engine, on loopback.

Only the broker calls it: every call must carry the worker's secret (X-Escrow-Worker-Secret),
which the broker sent back at registration; anything else gets 401. The broker has already
authorised the person and checked their grant; the worker only runs the model.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request

from broker.domain.hosting import SECRET_HEADER
from broker.errors import BadRequest, EscrowError, InvalidInput, Unauthorized
from broker.hosting.engine import (
    VIEWS_FIELD,
    Engine,
    Generation,
    Message,
    TokenLogprob,
    embed_inputs,
    not_a_generator,
    not_an_encoder,
    sampling_of,
    with_logprobs,
    with_views,
)


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
        _can(state, "generate")
        prompt = _completion_prompt(body)
        sampling = with_views(with_logprobs(sampling_of(body), body, chat=False), body)
        generation = state.engine.generate(prompt, sampling)
        return _answer(state, body, generation, chat=False)

    @app.post("/v1/chat/completions")
    def chat() -> Response:
        body = _body()
        _can(state, "generate")
        prompt = state.engine.chat_prompt(_chat_messages(body))
        sampling = with_views(with_logprobs(sampling_of(body), body, chat=True), body)
        generation = state.engine.generate(prompt, sampling)
        return _answer(state, body, generation, chat=True)

    @app.post("/v1/embeddings")
    def embeddings() -> Response:
        body = _body()
        _can(state, "embed")
        return jsonify(_embeddings(state, body))

    return app


def _completion_prompt(body: dict[str, Any]) -> str:
    """A completion's prompt: one string (or a list of exactly one)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidInput("'prompt' must be a string", hint='e.g. "Once upon a time"')
    return prompt


def _chat_messages(body: dict[str, Any]) -> list[Message]:
    """A chat's messages: a non-empty list of {role, content} with text content."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str) for m in messages
    ):
        raise InvalidInput(
            "'messages' must be a list of {role, content} with text content",
            hint='e.g. [{"role": "user", "content": "Hello"}]',
        )
    return [Message(m["role"], m["content"]) for m in messages]


def _embeddings(state: WorkerState, body: dict[str, Any]) -> dict[str, Any]:
    """The embeddings' answer, in the requested encoding and checked against `dimensions`."""
    texts = embed_inputs(body)
    form = body.get("encoding_format", "float")
    if form not in ("float", "base64"):
        raise BadRequest("encoding_format must be float or base64", hint="float")
    result = state.engine.embed(texts)
    wanted = body.get("dimensions")
    if wanted is not None and result.vectors and wanted != len(result.vectors[0]):
        raise BadRequest(
            f"this model's vectors have {len(result.vectors[0])} dimensions, not {wanted!r}",
            hint="leave 'dimensions' out",
        )
    return {
        "object": "list",
        "model": state.model,
        "data": [{"object": "embedding", "index": i, "embedding": _encoded(v, form)}
                 for i, v in enumerate(result.vectors)],
        "usage": {"prompt_tokens": result.prompt_tokens,
                  "total_tokens": result.prompt_tokens},
    }


def _can(state: WorkerState, task: str) -> None:
    """An encoder answers only embeddings, a causal LM only completions: a 400 otherwise."""
    if state.engine.task != task:
        raise (not_an_encoder if task == "embed" else not_a_generator)(state.model)


def _encoded(vector: list[float], form: object) -> list[float] | str:
    """A vector as JSON numbers, or as OpenAI's base64 of little-endian float32 (what the
    official Python client asks for by default, and decodes)."""
    if form == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


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
    views = _logprobs(generation.tokens, chat) if generation.tokens else None
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
        choice["logprobs"] = views
    else:
        choice.update(text=text, logprobs=views)
    answer: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": state.model,
        "choices": [choice],
        "usage": _usage(generation),
    }
    if generation.views is not None:
        answer[VIEWS_FIELD] = generation.views.as_json()
    return jsonify(answer)


def _events(model: str, ident: str, created: int, generation: Generation,
            chat: bool) -> Iterator[str]:
    """Server-sent events: one chunk per text piece, a last chunk with the finish reason and
    the usage, then [DONE]. Layer views, if asked, come in a chunk of their own (no text) just
    before the last: the broker reads the usage from the stream's last few kilobytes."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    shown = 0  # the tokens whose research views went out already

    def chunk(piece: str | None, finish: str | None, first: bool = False) -> str:
        nonlocal shown
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        fresh, shown = generation.tokens[shown:], len(generation.tokens)
        views = _logprobs(fresh, chat) if fresh else None
        if chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if piece is not None:
                delta["content"] = piece
            choice.update(delta=delta, logprobs=views)
        else:
            choice.update(text=piece or "", logprobs=views)
        data: dict[str, Any] = {"id": ident, "object": kind, "created": created, "model": model,
                                "choices": [choice]}
        if finish is not None:
            data["usage"] = _usage(generation)
        return f"data: {json.dumps(data)}\n\n"

    if chat:
        yield chunk("", None, first=True)
    for piece in generation:
        yield chunk(piece, None)
    if generation.views is not None:
        viewed: dict[str, Any] = {"id": ident, "object": kind, "created": created,
                                  "model": model, "choices": [], VIEWS_FIELD:
                                  generation.views.as_json()}
        yield f"data: {json.dumps(viewed)}\n\n"
    yield chunk(None, generation.finish_reason)
    yield "data: [DONE]\n\n"


def _logprobs(tokens: list[TokenLogprob], chat: bool) -> dict[str, Any]:
    """Research views in OpenAI's shapes: chat's `content` list (token, logprob, bytes,
    top_logprobs), or the legacy completions' parallel lists (tokens, token_logprobs,
    top_logprobs, text_offset: where each token starts in the completion's text)."""
    if chat:
        return {"content": [
            {**_entry(t.token, t.logprob),
             "top_logprobs": [_entry(text, value) for text, value in t.top]}
            for t in tokens], "refusal": None}
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t.token)
    return {"tokens": [t.token for t in tokens],
            "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [dict(t.top) for t in tokens],
            "text_offset": offsets}


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


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
