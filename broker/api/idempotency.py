"""Idempotency-Key on every state-changing API call.

Before the view: a key seen before (same caller, same request) answers with the first outcome,
and the view does not run. During the view: its first commit is held (`CommitHold`), so that
the answer is written in the change's own transaction; after the view, that transaction
commits. A call without the header runs as before.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, request
from sqlalchemy.exc import IntegrityError

from broker.adapters.db.uow import CommitHold, commit_hold
from broker.errors import Conflict, EscrowError, Unauthorized
from broker.http.common import caller, escrow, problem_response
from broker.services import idempotency
from broker.services.idempotency import HEADER, Answer, Call

CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REPLAYED = "Idempotent-Replayed"


def init_app(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_end)
    app.teardown_request(_abandon)


def _begin() -> Response | None:
    key = request.headers.get(HEADER)
    if key is None or request.method not in CHANGING or not request.path.startswith("/api/v1/"):
        return None
    try:
        principal = caller()
    except Unauthorized:
        return None  # the view answers 401 itself
    target = f"{request.path}?{request.query_string.decode('latin-1')}"
    call = idempotency.call_of(principal, key, request.method, target, request.get_data())
    with escrow().uow() as uow:
        earlier = idempotency.earlier_answer(uow, call)
    if earlier is not None:
        replay = Response(earlier.body, status=earlier.status, content_type=earlier.content_type)
        replay.headers[REPLAYED] = "true"
        return replay
    hold = CommitHold(lambda session, answer: idempotency.record(session, call, answer))
    g.idempotent = (call, hold, commit_hold.set(hold))
    return None


def _end(response: Response) -> Response:
    state = g.pop("idempotent", None)
    if state is None:
        return response
    call, hold, token = state
    try:
        return _commit(call, hold, response)
    finally:
        commit_hold.reset(token)


def _commit(call: Call, hold: CommitHold, response: Response) -> Response:
    answer = _answer_of(response)
    try:
        if hold.held is not None:
            hold.finish(answer)
        elif hold.committed and answer is not None:
            with escrow().uow() as uow:
                idempotency.record_answer(uow, call, answer)
    except EscrowError as error:
        if isinstance(error.__cause__, IntegrityError):  # the same key, at the same time
            error = Conflict(
                f"another request with this {HEADER} was being made at the same time; "
                "this one made no change",
                hint="retry with the same Idempotency-Key to get that request's answer",
            )
        return problem_response(error, idempotency_key=call.key)
    return response


def _answer_of(response: Response) -> Answer | None:
    if response.is_streamed or response.direct_passthrough:
        return None
    return Answer(response.status_code, response.content_type or "", response.get_data())


def _abandon(_error: BaseException | None) -> None:
    state: Any = g.pop("idempotent", None)
    if state is not None:  # the view failed without an answer: nothing it held is committed
        _call, hold, token = state
        hold.abandon()
        commit_hold.reset(token)
