"""Studies of live use, with consent: the pure part (no Flask, no SQL).

A study is registered by a researcher for a model (ORG/MODEL: every version) or one version
(ORG/MODEL@VERSION), with recipient keys; the model's lab approves it (or rejects it); its owner
or the lab closes it. A person who uses the hosted model may consent to donate their exchanges
to an approved study; from then on each exchange of theirs on a version the study covers is
captured: made into one JSON document (`exchange`), encrypted with age to the study's recipients
at once, and stored under `capture_key`. For a streamed answer the text is gathered from the
server-sent events as they are relayed (`StreamText`), bounded by `MAX_ANSWER`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.errors import InvalidInput

PROPOSED, APPROVED, REJECTED, CLOSED = "proposed", "approved", "rejected", "closed"
STATES = (PROPOSED, APPROVED, REJECTED, CLOSED)
DECIDABLE = (PROPOSED,)  # approve or reject: only a proposed study
CLOSABLE = (PROPOSED, APPROVED)

CAPTURED_PATHS = ("/v1/completions", "/v1/chat/completions")  # embeddings are not captured
MAX_ANSWER = 1 << 20  # characters of answer text captured per choice; more: marked truncated
MAX_PENDING_LINE = 1 << 20  # an SSE line longer than this is not parsed (nothing captured of it)
MAX_RECIPIENTS = 16
MAX_PURPOSE = 4000
MAX_TITLE = 200

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
# request members never captured: nothing there identifies the caller, but `user` may
NOT_CAPTURED = frozenset({"user"})


def check_study_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"study name {name!r} is not valid",
            hint="use 1-64 lowercase letters, digits, '.', '_' or '-', e.g. tutoring-2027",
        )
    return name


def check_text(what: str, value: object, limit: int, *, required: bool = True) -> str:
    """A title or purpose: a string of at most `limit` characters (required: not blank)."""
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInput(f"'{what}' is missing", hint=f"say the study's {what} in words")
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"'{what}' is longer than {limit} characters",
                           hint=f"shorten the {what}")
    return value


def parse_target(target: object) -> tuple[str, str | None]:
    """ORG/MODEL (every version) or ORG/MODEL@VERSION: (model, version or None)."""
    if not isinstance(target, str) or not target.strip():
        raise InvalidInput("'model' is missing",
                           hint="name the model ORG/MODEL, or one version ORG/MODEL@VERSION")
    model, at, version = target.strip().partition("@")
    if at and not version:
        raise InvalidInput(f"model {target!r} names no version after '@'",
                           hint="name ORG/MODEL (every version) or ORG/MODEL@VERSION")
    return model, version or None


def next_state(state: str, decision: str) -> str | None:
    """The state after `decision` (approve, reject, close), or None: not allowed from `state`."""
    if decision in ("approve", "reject"):
        return (APPROVED if decision == "approve" else REJECTED) if state in DECIDABLE else None
    if decision == "close":
        return CLOSED if state in CLOSABLE else None
    return None


def capture_key(study_id: str, moment: datetime, capture_id: str) -> str:
    """The object key of one capture: under its study, by UTC day."""
    return f"studies/{study_id}/captures/{moment.date().isoformat()}/{capture_id}.age"


@dataclass
class Choice:
    """One choice of an answer, as captured."""

    text: str = ""
    finish_reason: str | None = None
    truncated: bool = False

    def add(self, piece: str) -> None:
        room = MAX_ANSWER - len(self.text)
        if len(piece) > room:
            self.text += piece[:max(room, 0)]
            self.truncated = True
        else:
            self.text += piece


@dataclass
class Answer:
    """What is captured of an answer: its choices' text, finish reasons and usage."""

    choices: dict[int, Choice] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    truncated: bool = False  # part of the stream could not be read (a line over the bound)

    def choice(self, index: object) -> Choice:
        key = index if isinstance(index, int) and not isinstance(index, bool) else 0
        return self.choices.setdefault(key, Choice())

    def take(self, event: Mapping[str, Any]) -> None:
        """One JSON object of the answer: a whole body, or one streamed chunk."""
        choices = event.get("choices")
        for item in choices if isinstance(choices, list) else []:
            if not isinstance(item, dict):
                continue
            choice = self.choice(item.get("index"))
            for text in (item.get("text"), _content(item.get("delta")),
                         _content(item.get("message"))):
                if isinstance(text, str):
                    choice.add(text)
            if isinstance(item.get("finish_reason"), str):
                choice.finish_reason = item["finish_reason"]
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]

    def view(self) -> dict[str, Any]:
        return {
            "choices": [{"index": i, "text": c.text, "finish_reason": c.finish_reason,
                         "truncated": c.truncated} for i, c in sorted(self.choices.items())],
            "usage": self.usage,
            "truncated": self.truncated or any(c.truncated for c in self.choices.values()),
        }


def _content(message: object) -> object:
    return message.get("content") if isinstance(message, dict) else None


def answer_of_body(content: bytes) -> Answer:
    """A whole (not streamed) answer's body."""
    answer = Answer()
    try:
        found = json.loads(content)
    except ValueError:
        answer.truncated = True
        return answer
    if isinstance(found, dict):
        answer.take(found)
    return answer


class StreamText:
    """Gathers a streamed answer from its server-sent events as the bytes are relayed, in
    bounded memory: the answer's text (MAX_ANSWER per choice) and one unfinished line."""

    def __init__(self) -> None:
        self.answer = Answer()
        self._pending = b""
        self._skipping = False  # inside a line over MAX_PENDING_LINE: dropped to its end

    def feed(self, piece: bytes) -> None:
        data = self._pending + piece
        lines = data.split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if self._skipping:
                self._skipping = False
                continue
            self._line(line)
        if len(self._pending) > MAX_PENDING_LINE:
            self._pending, self._skipping = b"", True
            self.answer.truncated = True

    def finish(self) -> Answer:
        if self._pending and not self._skipping:
            self._line(self._pending)
        self._pending = b""
        return self.answer

    def _line(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not line.startswith(b"data:"):
            return
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            self.answer.truncated = True
            return
        if isinstance(event, dict):
            self.answer.take(event)


def exchange(*, study_id: str, capture_id: str, participant: str, model: str, endpoint: str,
             request: Mapping[str, Any], answer: Answer, started_at: datetime,
             ended_at: datetime) -> bytes:
    """One captured exchange as the JSON document that is encrypted: the request as sent (its
    model, messages or prompt and sampling parameters; no credentials, which travel in
    headers), the answer's text, finish reasons and usage, and the times. `participant` is the
    consent's id: one person's exchanges link up within the study, never to who they are."""
    document = {
        "format": "weights-escrow.study-capture.v1",
        "study": study_id,
        "capture": capture_id,
        "participant": participant,
        "model": model,
        "endpoint": endpoint,
        "request": {k: v for k, v in request.items() if k not in NOT_CAPTURED},
        "response": answer.view(),
        "started_at": started_at.isoformat(),
        "ended_at": ended_at.isoformat(),
    }
    return json.dumps(document, ensure_ascii=False, sort_keys=True).encode()
