"""The chat page of a hosted grant: a person talks to the version their inference grant is of.

A turn goes the way of every /v1 chat completion: routed under that grant
(`broker.services.hosted.route`, so a revoked grant stops the next turn), admitted against its
quotas and counted (`broker.services.hosted_usage`), sent to a live worker. Decoding is greedy
(temperature 0): the same conversation gets the same answer, which is what a study of a model
over time needs. The conversation is not stored by the broker: the page carries it from turn to
turn (as an OpenAI client does), and only the counts are kept, as for every query.
"""

from __future__ import annotations

import json
from typing import Any

from typing_extensions import TypedDict

from broker.adapters.db.models import Grant
from broker.container import Escrow
from broker.domain import studies as exchanges
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.hosting import QUERYING_KINDS, model_name
from broker.domain.principals import Principal
from broker.errors import InvalidInput, NotFound, Unavailable
from broker.services import hosted, hosted_usage, study_captures

DEFAULT_TOKENS = 64  # the longest answer of one turn, unless the person asks otherwise
MAX_TOKENS = 1024
MAX_MESSAGES = 40  # turns carried by the page (both sides)
MAX_CHARS = 16_000  # of the whole conversation
CHAT_PATH = "/v1/chat/completions"  # the worker route a turn goes to (and its captures name)


class Turn(TypedDict):
    role: str  # "user" | "assistant"
    content: str


def grant_model(escrow: Escrow, actor: Principal, grant_id: str) -> tuple[str, str]:
    """(ORG/MODEL@VERSION, kind) of the actor's own hosted grant `grant_id`, else NotFound."""
    authorize(actor, Action.HOSTED_QUERY)
    with escrow.uow() as uow:
        grant = uow.session.get(Grant, grant_id)
        if grant is None or str(grant.user_id) != actor.id or grant.kind not in QUERYING_KINDS:
            raise NotFound(
                f"you have no inference grant {grant_id}",
                hint="your hosted grants are listed on /me (escrow grants lists every grant)",
            )
        deposit = grant.deposit
        return (model_name(deposit.model.organisation.name, deposit.model.name,
                           deposit.version), grant.kind)


def conversation(text: object) -> list[Turn]:
    """The turns the page carried (a JSON list), checked: a page altered by hand is refused."""
    if text is None or text == "":
        return []
    try:
        found = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        found = None
    if (not isinstance(found, list) or len(found) > MAX_MESSAGES
            or not all(_is_turn(item) for item in found)):
        raise InvalidInput(
            "the conversation carried by the page is not one this page made",
            hint="start a new conversation (open the chat page again)",
        )
    return [{"role": item["role"], "content": item["content"]} for item in found]


def reply(escrow: Escrow, actor: Principal, grant_id: str, turns: list[Turn],
          message: object, max_tokens: object = None) -> list[Turn]:
    """The conversation with the person's `message` and the model's answer added (at most
    `max_tokens` tokens long, DEFAULT_TOKENS unless given)."""
    longest = answer_tokens(max_tokens)
    if not isinstance(message, str) or not message.strip():
        raise InvalidInput("the message is empty", hint="write something to the model")
    asked: list[Turn] = [*turns, {"role": "user", "content": message.strip()}]
    if sum(len(t["content"]) for t in asked) > MAX_CHARS or len(asked) >= MAX_MESSAGES:
        raise InvalidInput(
            f"the conversation is longer than this page carries ({MAX_MESSAGES} turns, "
            f"{MAX_CHARS} characters)",
            hint="start a new conversation (open the chat page again)",
        )
    name, _ = grant_model(escrow, actor, grant_id)
    with escrow.uow() as uow:
        route = hosted.route(uow, escrow.worker_key, actor, name, grant_id)
        targets = study_captures.capturing(uow, actor.id, route.deposit_id)  # as /v1 does
        hosted_usage.admit(uow, route.grant_id, route.requests_per_minute, route.tokens_per_day)
    started = now()
    sent = {"model": route.model, "messages": asked, "max_tokens": longest, "temperature": 0}
    answer = hosted.send(route, CHAT_PATH, sent, stream=False)
    body: Any = answer.json() if answer.headers.get("Content-Type", "").startswith(
        "application/json") else None
    if answer.status_code != 200 or not isinstance(body, dict):
        with escrow.uow() as uow:
            hosted_usage.record(uow, route.grant_id, None)
        error = body.get("error") if isinstance(body, dict) else None
        said = error.get("message") if isinstance(error, dict) else None
        if 400 <= answer.status_code < 500 and isinstance(said, str):
            raise InvalidInput(  # the model's own limits: a longer context than it has, …
                f"{route.model} cannot answer this: {said}",
                hint="ask for a shorter answer, or start a new conversation",
            )
        raise Unavailable(
            f"the model worker of {route.model} did not answer"
            + (f": {said}" if isinstance(said, str) else f" ({answer.status_code})"),
            hint="retry; if it persists, tell the operator",
        )
    with escrow.uow() as uow:
        hosted_usage.record(uow, route.grant_id, body.get("usage"))
    if targets:  # the person consents to a study of this version: the turn is donated
        study_captures.capture_all(escrow, targets, model=route.model, endpoint=CHAT_PATH,
                            request=sent, answer=exchanges.answer_of_body(answer.content),
                            started_at=started)
    text = body["choices"][0]["message"]["content"] or ""
    return [*asked, {"role": "assistant", "content": text}]


def answer_tokens(value: object) -> int:
    """The longest answer asked for: a whole number of tokens from 1 to MAX_TOKENS."""
    if value is None or value == "":
        return DEFAULT_TOKENS
    number = int(value) if isinstance(value, str) and value.strip().isdigit() else value
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= MAX_TOKENS:
        raise InvalidInput(
            f"the longest answer must be a whole number of tokens from 1 to {MAX_TOKENS}, "
            f"not {str(value)[:20]!r}",
            hint=f"leave it empty for {DEFAULT_TOKENS}",
        )
    return number


def _is_turn(item: object) -> bool:
    return (isinstance(item, dict) and item.get("role") in ("user", "assistant")
            and isinstance(item.get("content"), str))
