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
from conftest import MODEL, NAME, Hosted, ask, broker_escrow, make_person, start_worker

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


def test_a_person_without_a_key_gets_inference_and_queries_it(hosted, direct):
    """The policy's proven_key is for weights: hosted access releases no key, so a verified
    person who registered none gets it, and queries the model; weights stay refused."""
    from broker.hosting.engine import Sampling

    kira = make_person(hosted.broker, "kira", key=False)
    grant = ask(hosted.broker, kira, "inference")
    assert kira.views[grant]["key_id"] is None
    answer = client(hosted, kira.token).completions.create(
        model=NAME, prompt=PROMPT, max_tokens=5, temperature=0)
    assert answer.choices[0].text == direct.generate(PROMPT, Sampling(max_tokens=5)).text()
    chat = client(hosted, kira.token).chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert chat.usage.completion_tokens == 3
    weights = requests.post(f"{hosted.broker.url}/api/v1/requests", timeout=30,
                            headers={"Authorization": f"Bearer {kira.token}"},
                            json={"model": MODEL, "version": "1", "purpose": "a study",
                                  "kind": "weights"})
    assert weights.status_code == 422 and "a proven key" in weights.json()["detail"]


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


@pytest.fixture(scope="module")
def ivy(hosted):
    """A person with an internals grant: inference plus research views."""
    person = make_person(hosted.broker, "ivy")
    ask(hosted.broker, person, "internals")
    return person


def _piece(direct, before: list[int], token: int) -> str:
    """The text `token` adds after the generated tokens `before` (the whole of them)."""
    start = direct.tokenizer.decode(before, skip_special_tokens=True)
    return direct.tokenizer.decode([*before, token], skip_special_tokens=True)[len(start):]


def _greedy_views(direct, prompt: str, steps: int, top: int) -> list[tuple[int, float, dict]]:
    """Greedy decoding with transformers itself on the original files, the whole sequence
    each step (no KV cache): each step's (token, its logprob, {token: logprob} of the top),
    tokens named by the text they add."""
    import torch

    ids = list(direct.tokenizer.encode(prompt, add_special_tokens=False))
    found, made = [], []
    with torch.no_grad():
        for _ in range(steps):
            logits = direct.model(input_ids=torch.tensor([ids], device=direct.device)).logits
            logprobs = torch.log_softmax(logits[0, -1].float(), dim=-1)
            best = torch.topk(logprobs, top)
            token = int(best.indices[0])
            found.append((_piece(direct, made, token), float(logprobs[token]),
                          {_piece(direct, made, int(i)): v for i, v in
                           zip(best.indices.tolist(), best.values.tolist(), strict=True)}))
            ids.append(token)
            made.append(token)
    return found


def test_internals_chat_logprobs_equal_transformers_on_the_original_files(hosted, ivy, direct):
    from broker.hosting.engine import Message

    messages = [{"role": "user", "content": "Who decides?"}]
    expected = _greedy_views(direct, direct.chat_prompt([Message("user", "Who decides?")]), 6, 5)
    answer = client(hosted, ivy.token).chat.completions.create(
        model=NAME, messages=messages, max_tokens=6, temperature=0, logprobs=True,
        top_logprobs=5)
    content = answer.choices[0].logprobs.content
    assert len(content) == len(expected) == answer.usage.completion_tokens
    for got, (token, logprob, top) in zip(content, expected, strict=True):
        assert got.token == token
        assert got.bytes == list(got.token.encode("utf-8"))
        assert abs(got.logprob - logprob) < 1e-4
        assert got.top_logprobs[0].token == got.token  # greedy: the chosen token is the top-1
        assert len(got.top_logprobs) == 5
        for alternative, (other, value) in zip(got.top_logprobs, top.items(), strict=True):
            assert alternative.token == other
            assert abs(alternative.logprob - value) < 1e-4
    assert "".join(c.token for c in content) == answer.choices[0].message.content

    streamed = client(hosted, ivy.token).chat.completions.create(
        model=NAME, messages=messages, max_tokens=6, temperature=0, logprobs=True,
        top_logprobs=5, stream=True)
    views = [v for c in streamed if c.choices and c.choices[0].logprobs
             for v in c.choices[0].logprobs.content or []]
    assert [(v.token, v.logprob) for v in views] == [(c.token, c.logprob) for c in content]


def test_internals_completion_logprobs_in_the_legacy_shape(hosted, ivy, direct):
    expected = _greedy_views(direct, PROMPT, 5, 2)
    answer = client(hosted, ivy.token).completions.create(
        model=NAME, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2)
    views = answer.choices[0].logprobs
    assert views.tokens == [t for t, _, _ in expected]
    assert all(abs(a - b) < 1e-4 for a, (_, b, _) in zip(views.token_logprobs, expected,
                                                          strict=True))
    for got, (_, _, top) in zip(views.top_logprobs, expected, strict=True):
        assert got.keys() == top.keys()  # a JSON object: its order is not kept
        assert all(abs(got[k] - top[k]) < 1e-4 for k in top)
    assert views.text_offset[0] == 0 and "".join(views.tokens) == answer.choices[0].text

    streamed = [c.choices[0].logprobs for c in client(hosted, ivy.token).completions.create(
        model=NAME, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2, stream=True)]
    assert [t for v in streamed if v for t in v.tokens] == views.tokens


def test_the_same_seed_samples_the_same_text(hosted, ivy):
    openai = client(hosted, ivy.token)
    texts = [openai.completions.create(model=NAME, prompt=PROMPT, max_tokens=12,
                                       temperature=1.0, seed=seed).choices[0].text
             for seed in (7, 7, 8)]
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]  # sampled, not greedy
    viewed = openai.completions.create(model=NAME, prompt=PROMPT, max_tokens=12,
                                       temperature=1.0, seed=7, logprobs=1).choices[0]
    assert viewed.text == texts[0]  # asking for the views does not change the sampling
    assert "".join(viewed.logprobs.tokens) == viewed.text
    assert all(lp <= 0 for lp in viewed.logprobs.token_logprobs)


def test_an_inference_grant_asking_for_logprobs_is_refused_with_a_403(hosted, rosa):
    import openai

    for ask_views in (
        lambda o: o.chat.completions.create(model=NAME, max_tokens=2, logprobs=True,
                                            messages=[{"role": "user", "content": "Hi"}]),
        lambda o: o.completions.create(model=NAME, prompt=PROMPT, max_tokens=2, logprobs=1),
    ):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            ask_views(client(hosted, rosa.token))
        assert "of kind inference, which allows no internals" in refused.value.body["message"]
        assert "--kind internals" in refused.value.body["hint"]
        assert refused.value.body["code"] == "permission_denied"


VIEWS = {"hidden_states": [0, 2], "attention": [1, 2]}


@pytest.fixture(scope="module")
def reference(hosted):
    """The original tiny model, built by transformers itself from the deposited files, with
    eager attention (sdpa gives no attention weights)."""
    import json

    import safetensors.torch
    import transformers

    config = transformers.AutoConfig.for_model(**json.loads(hosted.files["config.json"]))
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.load_state_dict(safetensors.torch.load(hosted.files["model.safetensors"]),
                          strict=False)
    model.tie_weights()
    return model.eval()


def _close(got, expected, tolerance: float = 1e-4) -> bool:
    import numpy

    return numpy.allclose(numpy.array(got), expected, atol=tolerance, rtol=0)


def _check_views(views: dict, reference, prompt_tokens: int, completion_tokens: int) -> None:
    """The views equal a forward pass of transformers over the same tokens."""
    import torch

    ids = views["token_ids"]
    assert len(ids) == len(views["tokens"]) == prompt_tokens + completion_tokens
    with torch.no_grad():
        result = reference(input_ids=torch.tensor([ids]), output_hidden_states=True,
                           output_attentions=True)
    assert sorted(views["layers"]) == ["0", "1", "2"]
    assert set(views["layers"]["0"]) == {"hidden_states"}  # the embeddings: no attention
    assert set(views["layers"]["1"]) == {"attention"}
    for layer in VIEWS["hidden_states"]:
        found = views["layers"][str(layer)]["hidden_states"]
        assert len(found) == len(ids) and len(found[0]) == 64  # one vector a token
        assert _close(found, result.hidden_states[layer][0].numpy())
    for layer in VIEWS["attention"]:
        heads = views["layers"][str(layer)]["attention"]
        expected = result.attentions[layer - 1][0].numpy()
        assert len(heads) == 2  # the tiny model's heads
        for head, rows in enumerate(heads):
            assert [len(row) for row in rows] == list(range(1, len(ids) + 1))  # causal rows
            for i, row in enumerate(rows):
                assert _close(row, expected[head, i, :i + 1])
                assert abs(sum(row) - 1) < 1e-4


def _day_usage(hosted: Hosted, grant_id: str) -> dict[str, int]:
    from broker.services.hosted_usage import day_usage

    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        return day_usage(uow, grant_id)


def test_internals_layer_views_equal_transformers_on_the_original_files(
        hosted, ivy, direct, reference):
    openai = client(hosted, ivy.token)
    answer = openai.completions.create(model=NAME, prompt=PROMPT, max_tokens=5, temperature=0,
                                       extra_body={"escrow_views": VIEWS})
    views = answer.model_extra["escrow_views"]
    _check_views(views, reference, answer.usage.prompt_tokens, answer.usage.completion_tokens)
    prompt_ids = direct.tokenizer.encode(PROMPT, add_special_tokens=False)
    assert views["token_ids"][:len(prompt_ids)] == prompt_ids
    completion = views["token_ids"][len(prompt_ids):]
    assert direct.tokenizer.decode(completion) == answer.choices[0].text  # the text's tokens
    assert views["tokens"] == direct.tokenizer.convert_ids_to_tokens(views["token_ids"])

    messages = [{"role": "user", "content": "Who decides?"}]
    whole = openai.chat.completions.create(model=NAME, messages=messages, max_tokens=4,
                                           temperature=0, extra_body={"escrow_views": VIEWS})
    chat_views = whole.model_extra["escrow_views"]
    _check_views(chat_views, reference, whole.usage.prompt_tokens,
                 whole.usage.completion_tokens)
    before = _day_usage(hosted, ivy.grants["internals"])
    chunks = list(openai.chat.completions.create(
        model=NAME, messages=messages, max_tokens=4, temperature=0, stream=True,
        extra_body={"escrow_views": VIEWS}))
    viewed = [c for c in chunks if (c.model_extra or {}).get("escrow_views")]
    assert len(viewed) == 1 and viewed[0].choices == []  # a chunk of its own
    assert chunks.index(viewed[0]) == len(chunks) - 2  # just before the last
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    # a stream of many kilobytes: its usage is still counted, and before it ends
    after = _day_usage(hosted, ivy.grants["internals"])
    assert after["requests"] == before["requests"] + 1
    assert after["input_tokens"] == before["input_tokens"] + whole.usage.prompt_tokens
    assert after["output_tokens"] == before["output_tokens"] + whole.usage.completion_tokens
    streamed = viewed[0].model_extra["escrow_views"]
    assert streamed["token_ids"] == chat_views["token_ids"]
    assert _close(streamed["layers"]["2"]["hidden_states"],
                  chat_views["layers"]["2"]["hidden_states"], 1e-6)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        whole.choices[0].message.content)


def test_layer_views_out_of_bounds_are_a_400_with_a_hint(hosted, ivy):
    import openai

    query = client(hosted, ivy.token)
    for views, max_tokens, message, hint in (
        ({"hidden_states": [3]}, 2, "names layer 3, but this model's hidden_states are of "
         "layers 0 to 2", "name layers 0 to 2"),
        ({"attention": [0]}, 2, "attention are of layers 1 to 2",
         "layer 0 is the embeddings, which have no attention"),
        ({"hidden_states": [0, 1, 2, 3, 4]}, 2, "more than 4", "at most 4 layers"),
        ({"hidden_states": ["1"]}, 2, "must be a list of layer numbers",
         '"hidden_states": [0, 2]'),
        ({}, 2, "must be an object with hidden_states and/or attention", "e.g."),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            query.completions.create(model=NAME, prompt=PROMPT, max_tokens=max_tokens,
                                     extra_body={"escrow_views": views})
        body = refused.value.body
        assert message in body["message"], (views, body)
        assert hint in body["hint"], (views, body)
        assert body["code"] == "invalid_request"


def test_an_inference_grant_asking_for_layer_views_is_refused_with_a_403(hosted, rosa):
    import openai

    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(hosted, rosa.token).chat.completions.create(
            model=NAME, max_tokens=2, messages=[{"role": "user", "content": "Hi"}],
            extra_body={"escrow_views": {"hidden_states": [1]}})
    body = refused.value.body
    assert "of kind inference, which allows no internals" in body["message"]
    assert "escrow_views" in body["message"]
    assert "--kind internals" in body["hint"] and "leave logprobs and escrow_views out" in (
        body["hint"])


def test_the_log_has_the_workers_key_releases_and_its_loading(hosted):
    from sqlalchemy import select

    from broker.adapters.db.models import AuditEvent

    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        actions = uow.session.scalars(select(AuditEvent.action)).all()
    assert actions.count("key.released") == len(hosted.files)  # the worker's, one per file
    assert actions.count("model_worker.loaded") == 1
    assert "key.release_refused" in actions  # rosa's refused release, above


def test_hosting_is_granted_under_the_policy_only_where_it_allows_hosted_access(hosted):
    """The worker's hosting grant names the policy that allows hosting (and its SHA-256); a
    policy whose access is weights only refuses `escrow hosted allow`, and nothing is made."""
    import hashlib
    import json
    import subprocess

    from live import ESCROW_BIN
    from sqlalchemy import func, select

    from broker.adapters.db.models import AuditEvent, Grant

    policy_file = hosted.base / "policies" / "acme.yaml"
    text = policy_file.read_text()
    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        leaves = uow.session.scalars(
            select(AuditEvent.leaf).where(AuditEvent.action == "grant.created")).all()
        hosting = [json.loads(leaf) for leaf in leaves
                   if json.loads(leaf)["subject"].get("kind") == "hosting"]
        grants_before = uow.session.scalar(select(func.count()).select_from(Grant))
    assert hosting and {h["details"]["policy"] for h in hosting} == {"acme"}  # the file acme.yaml
    assert hosting[0]["details"]["policy_sha256"] == hashlib.sha256(text.encode()).hexdigest()

    policy_file.write_text(text.replace("access: [weights, inference, internals]",
                                        "access: [weights]"))
    try:
        env = {k: v for k, v in hosted.broker.env.items() if k != "ESCROW_TOKEN"}
        refused = subprocess.run([ESCROW_BIN, "hosted", "allow", NAME, "--worker", "host-1"],
                                 env=env, capture_output=True, text=True, timeout=120)
    finally:
        policy_file.write_text(text)
    assert refused.returncode != 0
    assert "allows no hosted access (access: [weights])" in refused.stderr
    assert "adds inference (or internals) to the policy's access list" in refused.stderr
    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Grant)) == grants_before


def test_a_workers_login_lasts_as_long_as_a_hosting_grant(hosted):
    """A worker restarted months later still registers: its login is a `worker` session of
    365 days (a hosting grant's default), not a person's 30-day device login."""
    from sqlalchemy import select

    from broker.adapters.db.models import LoginSession, User
    from broker.services.hosting import WORKER_ISSUER

    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        found = uow.session.execute(
            select(LoginSession.kind, LoginSession.auth_time, LoginSession.expires_at)
            .join(User, User.id == LoginSession.user_id)
            .where(User.issuer == WORKER_ISSUER)).all()
    assert found and {kind for kind, _, _ in found} == {"worker"}
    for _, auth_time, expires_at in found:
        assert 364 <= (expires_at - auth_time).days <= 365


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


def _key(hosted: Hosted, person, *args: str) -> dict:
    """`escrow hosted key …` as the person (their login's token), through the API."""
    result = hosted.broker.escrow("hosted", "key", *args, "--broker", hosted.broker.url,
                                  "--token", person.token, "--json")
    return hosted.broker.last_json(result)


def _actions(hosted: Hosted) -> list[tuple[str, dict, dict, bytes]]:
    """Every event on the log: (action, subject, details, the leaf's bytes)."""
    import json

    from sqlalchemy import select

    from broker.adapters.db.models import AuditEvent

    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        leaves = uow.session.scalars(select(AuditEvent.leaf).order_by(AuditEvent.seq)).all()
    events = [json.loads(leaf) for leaf in leaves]
    return [(e["action"], e["subject"], e["details"], leaf) for e, leaf in zip(events, leaves)]


def test_an_api_key_queries_its_grants_version_only_and_revoking_it_or_the_grant_stops_it(
        hosted):
    import openai

    from broker.domain.principals import OPERATOR
    from broker.services import grants

    kim = make_person(hosted.broker, "kim")
    grant_id = ask(hosted.broker, kim, "inference")
    made = _key(hosted, kim, "create", grant_id)
    assert made["key"].startswith("ehk_") and made["model"] == NAME
    key = client(hosted, made["key"])
    assert key.completions.create(model=NAME, prompt=PROMPT, max_tokens=2).choices
    assert [m.id for m in key.models.list()] == [NAME]
    # another version, even one kim may query with her login, is refused to the key
    second = hosted.base / "tiny-2"
    second.mkdir()
    for path, data in hosted.files.items():
        (second / path).write_bytes(data)
    hosted.broker.escrow("deposit", str(second), "--model", MODEL, "--version", "2",
                         "--broker", hosted.broker.url, "--json")
    ask(hosted.broker, kim, "inference", version="2")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        key.completions.create(model=f"{MODEL}@2", prompt=PROMPT, max_tokens=2)
    assert f"bound to grant {grant_id} of {NAME}" in refused.value.body["message"]
    # the key is for /v1 only, and the broker keeps only its hash
    mine = requests.get(f"{hosted.broker.url}/api/v1/hosted/keys", timeout=30,
                        headers={"Authorization": f"Bearer {made['key']}"})
    assert mine.status_code == 401
    listed = _key(hosted, kim, "list")["keys"]
    assert [k["id"] for k in listed] == [made["id"]] and "key" not in listed[0]

    _key(hosted, kim, "revoke", made["key"])  # the key itself or its id
    with pytest.raises(openai.AuthenticationError) as refused:
        key.completions.create(model=NAME, prompt=PROMPT, max_tokens=2)
    assert "revoked" in refused.value.body["message"]

    other = client(hosted, _key(hosted, kim, "create", grant_id)["key"])
    assert other.completions.create(model=NAME, prompt=PROMPT, max_tokens=2).choices
    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        grants.revoke(uow, OPERATOR, grant_id)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        other.completions.create(model=NAME, prompt=PROMPT, max_tokens=2)
    assert "revoked" in refused.value.body["message"]

    events = [(a, s) for a, s, _, _ in _actions(hosted) if a.startswith("hosted_key.")]
    assert [a for a, _ in events] == ["hosted_key.created", "hosted_key.revoked",
                                      "hosted_key.created"]
    assert all(s["grant"] == grant_id and made["key"] not in str(s) for _, s in events)


def test_an_internals_grant_lists_its_version_and_its_api_key_gets_logprobs(hosted, ivy):
    assert [m.id for m in client(hosted, ivy.token).models.list()] == [NAME]
    key = _key(hosted, ivy, "create", ivy.grants["internals"])["key"]
    answer = client(hosted, key).completions.create(
        model=NAME, prompt=PROMPT, max_tokens=3, temperature=0, logprobs=0)
    assert len(answer.choices[0].logprobs.token_logprobs) == 3


def _set_quotas(hosted: Hosted, grant_id: str, per_minute, per_day) -> None:
    from broker.adapters.db.models import Grant

    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        grant = uow.session.get(Grant, grant_id)
        grant.requests_per_minute, grant.tokens_per_day = per_minute, per_day
        uow.commit()


def test_quotas_answer_429_with_retry_after_and_usage_goes_on_the_log_once_a_day(hosted):
    """The policy's quotas are the grant's; the grant's quotas are lowered here to reach them
    in a few requests. The day's usage is reported with the clock moved a day on."""
    from datetime import timedelta

    import openai

    from broker.domain.clock import now
    from broker.services import hosted_usage

    quinn = make_person(hosted.broker, "quinn")
    grant_id = ask(hosted.broker, quinn, "inference")
    view = quinn.views[grant_id]
    assert (view["requests_per_minute"], view["tokens_per_day"]) == (600, 1000000)
    query = client(hosted, quinn.token)

    _set_quotas(hosted, grant_id, 2, None)
    midnight = now().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    if (midnight - now()).total_seconds() < 90:  # the day's quota and report: one UTC day
        time.sleep((midnight - now()).total_seconds() + 0.5)
    if now().second >= 50:  # three requests in one minute: start in a fresh one if it ends soon
        time.sleep(60.5 - now().second - now().microsecond / 1e6)
    day = now().date().isoformat()
    minute = now().replace(second=0, microsecond=0)
    answered = [query.completions.create(model=NAME, prompt=PROMPT, max_tokens=1)
                for _ in range(2)]
    with pytest.raises(openai.RateLimitError) as refused:
        query.completions.create(model=NAME, prompt=PROMPT, max_tokens=1)
    assert now().replace(second=0, microsecond=0) == minute
    assert "2 requests per minute" in refused.value.body["message"]
    assert 1 <= int(refused.value.response.headers["Retry-After"]) <= 60

    prompt = answered[0].usage.prompt_tokens
    used = sum(a.usage.total_tokens for a in answered)
    outputs = sum(a.usage.completion_tokens for a in answered)
    _set_quotas(hosted, grant_id, None, used + 1)  # one more request, whatever its size
    streamed = list(query.completions.create(model=NAME, prompt=PROMPT, max_tokens=12,
                                             stream=True))
    assert streamed
    with pytest.raises(openai.RateLimitError) as refused:  # the stream's usage was counted
        query.completions.create(model=NAME, prompt=PROMPT, max_tokens=1)
    assert f"{used + 1} tokens per day" in refused.value.body["message"]
    assert 1 <= int(refused.value.response.headers["Retry-After"]) <= 86400

    with broker_escrow(hosted.broker) as escrow:
        moment = now()
        # Days that ended before now (other tests' usage, in a run across midnight UTC) first.
        hosted_usage.report_due(escrow, moment)
        assert hosted_usage.report_due(escrow, moment) == 0  # today has not ended
        after_today = moment + timedelta(days=1) + hosted_usage.REPORT_GRACE
        assert hosted_usage.report_due(escrow, after_today) >= 1
        assert hosted_usage.report_due(escrow, after_today + timedelta(hours=1)) == 0  # once
    events = _actions(hosted)
    usage = [d for a, s, d, _ in events if a == "hosted.usage" and s["grant"] == grant_id]
    assert usage == [{"day": day, "requests": len(answered) + 1,
                      "input_tokens": (len(answered) + 1) * prompt,
                      "output_tokens": outputs + 12}]
    leaves = b"".join(leaf for *_, leaf in events)  # numbers only: no prompt or output text
    output = "".join(chunk.choices[0].text for chunk in streamed)
    assert len(output) > 8
    assert PROMPT.encode() not in leaves and output.encode() not in leaves


def test_two_workers_share_the_load_and_sigterm_deregisters_one(hosted, rosa):
    from sqlalchemy import select

    from broker.adapters.db.models import AuditEvent

    # The second worker's identity is held by its host's key custody (issue 19): a real worker
    # process loads it from the wrapped blob, and no file of its host holds the secret.
    second = start_worker(hosted.broker, hosted.base, "host-2", wrapped=True)
    try:
        identity_blob = (second.home / "worker-key.blob").read_bytes()
        secret = identities_of(second)
        assert secret.startswith("AGE-SECRET-KEY-PQ-1")
        for path in (hosted.base / "host-2").rglob("*"):
            if path.is_file() and not path.is_symlink():
                text = path.read_bytes().upper()
                assert b"AGE-SECRET-KEY" not in text and secret.encode() not in text, path
        assert (second.home / "worker-key.blob").read_bytes() == identity_blob
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


def identities_of(worker) -> str:
    """The secret of a wrapped worker identity, unwrapped as its host would (for the scan)."""
    from broker.adapters.custody.local import LocalCustody
    from broker.hosting.identity import CONTEXT

    custody = LocalCustody(worker.data / "keys" / "master.key")
    secret = custody.unwrap((worker.home / "worker-key.blob").read_bytes(), CONTEXT).decode()
    return next(line for line in secret.splitlines() if line.startswith("AGE-SECRET-KEY"))


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
