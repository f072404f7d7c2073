"""The pure part of studies: states, targets, capture keys, and what is captured of an answer
(a whole body, or a stream gathered from its server-sent events in bounded memory)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from broker.domain import studies
from broker.errors import InvalidInput


def test_only_a_proposed_study_is_decided_and_only_an_open_one_closed():
    assert studies.next_state("proposed", "approve") == "approved"
    assert studies.next_state("proposed", "reject") == "rejected"
    assert studies.next_state("approved", "approve") is None
    assert studies.next_state("rejected", "approve") is None
    assert studies.next_state("approved", "close") == "closed"
    assert studies.next_state("proposed", "close") == "closed"
    assert studies.next_state("closed", "close") is None
    assert studies.next_state("rejected", "close") is None
    assert studies.next_state("approved", "reopen") is None


def test_targets_and_names():
    assert studies.parse_target("acme-ai/tiny") == ("acme-ai/tiny", None)
    assert studies.parse_target("acme-ai/tiny@1") == ("acme-ai/tiny", "1")
    for bad in ("", None, "acme-ai/tiny@"):
        with pytest.raises(InvalidInput) as refused:
            studies.parse_target(bad)
        assert refused.value.hint
    assert studies.check_study_name("tutoring-2027") == "tutoring-2027"
    for bad in ("Tutoring", "-x", "a b", "", 3, "x" * 65):
        with pytest.raises(InvalidInput):
            studies.check_study_name(bad)
    assert studies.check_text("title", None, 10, required=False) == ""
    with pytest.raises(InvalidInput):
        studies.check_text("purpose", "   ", 10)
    with pytest.raises(InvalidInput):
        studies.check_text("purpose", "x" * 11, 10)


def test_a_capture_is_stored_under_its_study_by_utc_day():
    moment = datetime(2027, 3, 4, 23, 59, tzinfo=UTC)
    key = studies.capture_key("st_1", moment, "cp_2")
    assert key == "studies/st_1/captures/2027-03-04/cp_2.age"


def test_a_whole_answer_chat_or_completion():
    chat = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    view = studies.answer_of_body(json.dumps(chat).encode()).view()
    assert view == {"choices": [{"index": 0, "text": "Hi", "finish_reason": "stop",
                                 "truncated": False}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1}, "truncated": False}
    completion = {"choices": [{"index": 0, "text": "a", "finish_reason": "length"},
                              {"index": 1, "text": "b", "finish_reason": "stop"}]}
    view = studies.answer_of_body(json.dumps(completion).encode()).view()
    assert [(c["text"], c["finish_reason"]) for c in view["choices"]] == [
        ("a", "length"), ("b", "stop")]
    assert studies.answer_of_body(b"not json").view()["truncated"] is True


def _sse(*events: dict) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + \
        b"data: [DONE]\n\n"


def test_a_stream_is_gathered_whatever_the_pieces_it_arrives_in():
    stream = _sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo é"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 2, "completion_tokens": 3}},
    )
    for size in (1, 2, 7, len(stream)):
        text = studies.StreamText()
        for start in range(0, len(stream), size):
            text.feed(stream[start:start + size])
        view = text.finish().view()
        assert view["choices"] == [{"index": 0, "text": "Hello é", "finish_reason": "stop",
                                    "truncated": False}]
        assert view["usage"] == {"prompt_tokens": 2, "completion_tokens": 3}
        assert view["truncated"] is False


def test_the_captured_answer_is_bounded_and_marked_truncated(monkeypatch):
    monkeypatch.setattr(studies, "MAX_ANSWER", 10)
    monkeypatch.setattr(studies, "MAX_PENDING_LINE", 64)
    text = studies.StreamText()
    text.feed(_sse(*({"choices": [{"index": 0, "text": "abcd"}]} for _ in range(5))))
    view = text.finish().view()
    assert view["choices"][0]["text"] == "abcdabcdab"
    assert view["choices"][0]["truncated"] and view["truncated"]

    text = studies.StreamText()  # a line longer than the bound: dropped, the rest still read
    text.feed(b"data: " + b"x" * 100)
    text.feed(b"y" * 100 + b"\n\n")
    text.feed(_sse({"choices": [{"index": 0, "text": "ok"}]}))
    view = text.finish().view()
    assert view["choices"][0]["text"] == "ok" and view["truncated"]


def test_the_exchange_document_holds_the_request_and_answer_but_not_the_user_field():
    answer = studies.answer_of_body(json.dumps(
        {"choices": [{"index": 0, "text": "x", "finish_reason": "stop"}]}).encode())
    moment = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)
    document = json.loads(studies.exchange(
        study_id="st_1", capture_id="cp_1", participant="sc_1", model="acme-ai/tiny@1",
        endpoint="/v1/completions",
        request={"model": "acme-ai/tiny@1", "prompt": "p", "temperature": 0, "user": "me@x"},
        answer=answer, started_at=moment, ended_at=moment))
    assert document["request"] == {"model": "acme-ai/tiny@1", "prompt": "p", "temperature": 0}
    assert document["response"]["choices"][0]["text"] == "x"
    assert (document["study"], document["capture"], document["participant"]) == (
        "st_1", "cp_1", "sc_1")
    assert document["started_at"] == moment.isoformat()
