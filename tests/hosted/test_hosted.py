"""Hosted access through the official OpenAI client, against real broker and worker processes
(fixtures: conftest.py). The tests run in file order on one module-wide setup; the last one
kills the worker."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests
from conftest import NAME, Hosted, ask, broker_escrow, make_person, start_worker

PROMPT = "The escrow keeps"


def client(hosted: Hosted, token: str):
    import openai

    return openai.OpenAI(base_url=hosted.broker.url + "/v1", api_key=token, max_retries=0,
                         timeout=60)


@pytest.fixture(scope="module")
def rosa(hosted):
    person = make_person(hosted.broker, "rosa")
    ask(hosted.broker, person, "inference")
    return person


@pytest.fixture(scope="module")
def direct(hosted):
    """The same engine, run in this process on the original files."""
    from broker.hosting.engine import load_engine

    return load_engine(hosted.files)


def test_greedy_completion_equals_the_engine_run_directly(hosted, rosa, direct):
    from broker.hosting.engine import Sampling

    expected = direct.generate(PROMPT, Sampling(max_tokens=12)).text()
    answer = client(hosted, rosa.token).completions.create(
        model=NAME, prompt=PROMPT, max_tokens=12, temperature=0)
    assert answer.choices[0].text == expected and expected
    assert answer.model == NAME
    assert answer.usage.completion_tokens == 12

    pieces = [chunk.choices[0].text for chunk in client(hosted, rosa.token).completions.create(
        model=NAME, prompt=PROMPT, max_tokens=12, temperature=0, stream=True)]
    assert len([p for p in pieces if p]) > 1  # streamed piece by piece
    assert "".join(pieces) == expected


def test_chat_streams_the_same_text_as_without_streaming(hosted, rosa, direct):
    from broker.hosting.engine import Message, Sampling

    messages = [{"role": "user", "content": "Who decides?"}]
    prompt = direct.chat_prompt([Message("user", "Who decides?")])
    expected = direct.generate(prompt, Sampling(max_tokens=10)).text()
    openai = client(hosted, rosa.token)
    whole = openai.chat.completions.create(model=NAME, messages=messages, max_tokens=10,
                                           temperature=0)
    assert whole.choices[0].message.content == expected
    streamed = openai.chat.completions.create(model=NAME, messages=messages, max_tokens=10,
                                              temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == expected


def test_models_lists_what_the_caller_may_query(hosted, rosa):
    assert [m.id for m in client(hosted, rosa.token).models.list()] == [NAME]
    nobody = make_person(hosted.broker, "nobody")
    assert list(client(hosted, nobody.token).models.list()) == []


def test_no_grant_or_a_weights_grant_is_refused_and_an_inference_grant_releases_no_key(
        hosted, rosa):
    import openai

    nobody = make_person(hosted.broker, "nina")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(hosted, nobody.token).completions.create(model=NAME, prompt=PROMPT, max_tokens=2)
    assert "no grant" in refused.value.body["message"]
    assert "--kind inference" in refused.value.body["hint"]

    walt = make_person(hosted.broker, "walt")
    ask(hosted.broker, walt, "weights")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(hosted, walt.token).completions.create(model=NAME, prompt=PROMPT, max_tokens=2)
    assert "of kind weights" in refused.value.body["message"]

    release = requests.post(
        f"{hosted.broker.url}/api/v1/grants/{rosa.grants['inference']}/files/0/release",
        headers={"Authorization": f"Bearer {rosa.token}"}, timeout=30)
    assert release.status_code == 403
    assert "hosted access gives no weights" in release.json()["detail"]


def test_embeddings_of_a_text_generation_model_are_a_clear_400(hosted, rosa):
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        client(hosted, rosa.token).embeddings.create(model=NAME, input=["hello", "world"])
    assert f"{NAME} is a text-generation model" in refused.value.body["message"]
    assert refused.value.body["code"] == "invalid_request"


def test_the_log_has_the_workers_key_releases_and_its_loading(hosted):
    from sqlalchemy import select

    from broker.adapters.db.models import AuditEvent

    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        actions = uow.session.scalars(select(AuditEvent.action)).all()
    assert actions.count("key.released") == len(hosted.files)  # the worker's, one per file
    assert actions.count("model_worker.loaded") == 1
    assert "key.release_refused" in actions  # rosa's refused release, above


def test_no_plaintext_weight_byte_is_on_the_workers_disk(hosted):
    weights = hosted.files["model.safetensors"]
    middle = len(weights) // 2
    needle = weights[middle:middle + 32]
    assert len(set(needle)) > 8  # distinctive: not a run of zeros
    scanned = 0
    for folder in (hosted.worker.home, hosted.worker.tmp, hosted.worker.data,
                   hosted.worker.config):
        for path in Path(folder).rglob("*"):
            if path.is_file():
                scanned += 1
                assert needle not in path.read_bytes(), path
    assert scanned >= 2  # the identity file and the stored login at least


def test_only_the_broker_calls_a_worker_and_no_row_holds_its_secret(hosted):
    """The worker answers only calls that carry its secret; the broker derives the secret from
    the worker's id and its own key, so reading the database gives no way to call a worker."""
    import requests
    from sqlalchemy import select

    from broker.adapters.db.models import ModelWorker
    from broker.hosting.server import SECRET_HEADER
    from broker.services.hosting import worker_secret

    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        worker = uow.session.scalars(select(ModelWorker)).first()
        assert worker is not None and not hasattr(worker, "secret")
        key, worker_id, url = escrow.worker_key, worker.id, worker.url
    call = {"model": NAME, "prompt": "hello", "max_tokens": 2}
    other_key = worker_secret(b"x" * 32, worker_id)
    for headers in ({}, {SECRET_HEADER: "guessed"}, {SECRET_HEADER: other_key}):
        refused = requests.post(url + "/v1/completions", json=call, headers=headers, timeout=30)
        assert refused.status_code == 401, (headers, refused.text)
        beat = requests.post(f"{hosted.broker.url}/api/v1/hosted/workers/{worker_id}/heartbeat",
                             headers=headers, timeout=30)
        assert beat.status_code == 401, beat.text
    answered = requests.post(url + "/v1/completions", json=call, timeout=60,
                             headers={SECRET_HEADER: worker_secret(key, worker_id)})
    assert answered.status_code == 200, answered.text


def test_a_revoked_grant_stops_the_next_request(hosted):
    import openai

    from broker.domain.principals import OPERATOR
    from broker.services import grants

    revy = make_person(hosted.broker, "revy")
    grant_id = ask(hosted.broker, revy, "inference")
    query = client(hosted, revy.token)
    assert query.completions.create(model=NAME, prompt=PROMPT, max_tokens=2).choices
    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        grants.revoke(uow, OPERATOR, grant_id)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        query.completions.create(model=NAME, prompt=PROMPT, max_tokens=2)
    assert "revoked" in refused.value.body["message"]


def test_two_workers_share_the_load_and_sigterm_deregisters_one(hosted, rosa):
    from sqlalchemy import select

    from broker.adapters.db.models import AuditEvent

    second = start_worker(hosted.broker, hosted.base, "host-2")
    try:
        query = client(hosted, rosa.token)
        for _ in range(12):
            assert query.completions.create(model=NAME, prompt=PROMPT, max_tokens=1).choices
        for worker in (hosted.worker, second):  # each served some (werkzeug logs each call)
            assert "POST /v1/completions" in worker.log.read_text(errors="replace")
        second.process.terminate()
        assert second.process.wait(timeout=30) == 0
        calls = hosted.worker.log.read_text(errors="replace").count("POST /v1/completions")
        for _ in range(3):  # all to the one left, at once: the stopped one is out of routing
            assert query.completions.create(model=NAME, prompt=PROMPT, max_tokens=1).choices
        assert hosted.worker.log.read_text().count("POST /v1/completions") == calls + 3
    finally:
        second.stop()
    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        actions = uow.session.scalars(select(AuditEvent.action)).all()
    assert actions.count("model_worker.loaded") == 2
    assert actions.count("model_worker.stopped") == 1


def test_a_killed_worker_leaves_routing_with_a_503_and_a_hint(hosted, rosa):
    import openai

    os.killpg(hosted.worker.process.pid, signal.SIGKILL)
    hosted.worker.process.wait(timeout=10)
    killed = time.monotonic()
    with pytest.raises(openai.InternalServerError) as unavailable:
        client(hosted, rosa.token).completions.create(model=NAME, prompt=PROMPT, max_tokens=2)
    assert time.monotonic() - killed < 6  # the heartbeat bound (domain.hosting.LIVE_FOR)
    assert unavailable.value.status_code == 503
    body = unavailable.value.body
    assert f"no model worker is serving {NAME}" in body["message"]
    assert "escrow model-worker" in body["hint"]
