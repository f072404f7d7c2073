"""`escrow demo --hosted`: the hosted-access story on the embedded defaults, one plain step at a
time (see `demo.py` for the broker it runs against and `demo_story.py` for the shared steps).

The lab deposits a tiny causal language model made in memory (`broker.hosting.tiny_model`); the
operator makes a model worker account and lets it host the version; `escrow model-worker` starts
as a process of its own and loads the version into memory; a researcher asks for inference
access, a reviewer approves it, the researcher makes an API key and chats with the model through
the broker's OpenAI-compatible `/v1` API (the official `openai` client when it is installed,
plain HTTP otherwise); the day's usage of the grant is shown; the key is revoked and its next
request refused; the worker is stopped, and the next request finds no worker. Needs the serve
extra (the worker loads the model with it): without it the demo stops before doing anything.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from broker.cli.demo_story import (
    ORG,
    PURPOSE,
    Scene,
    Story,
    create_org,
    deposit_model,
    issue_depositor_token,
    meet_people,
    prove_key,
    settings_dir,
    sign_nda,
    write_identity,
)
from broker.errors import ConfigError, EscrowError

HOSTED_MODEL = f"{ORG}/demo-chat"
WORKER = "demo-worker"
SERVE_PARTS = ("torch", "transformers", "tokenizers", "safetensors")
WORKER_START_S = 300.0  # importing torch and loading the model: seconds here, more on a slow disk
USAGE_WAIT_S = 10.0  # a stream's tokens are counted as its last bytes leave the broker
MESSAGES = [{"role": "user", "content": "Who keeps the weights?"}]


def require_serve_extra() -> None:
    """The hosted story runs a model worker, which needs the serve extra: refuse at once."""
    missing = []
    for name in SERVE_PARTS:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"escrow demo --hosted runs a model worker, which needs the serve extra "
            f"({', '.join(missing)} missing)",
            hint="install it: pip install 'weights-escrow[serve]' (or run escrow demo without "
            "--hosted)",
        )


@dataclass
class HostedScene(Scene):
    """The hosted story's shared state, on top of the weights story's."""

    worker: subprocess.Popen[bytes] | None = None
    worker_log: Path | None = None
    inference_grant_id: str = ""
    key_id: str = ""
    key: str = ""


def play_hosted(story: Story, escrow: Any, url: str, version: str, scratch: Path,
                client_dir: Path) -> None:
    scene = HostedScene(story, escrow, url, version, f"{HOSTED_MODEL}@{version}", scratch,
                        client_dir)
    story.summary.update(model=HOSTED_MODEL, hosted=True)
    try:
        for step in (create_org, _deposit_tiny_model, meet_people, prove_key, sign_nda,
                     _start_worker, _ask_for_inference, _make_key, _chat, _show_usage,
                     _revoke_key, _stop_worker):
            step(scene)
    finally:
        stop_worker(scene)
    story.summary["ok"] = True


def _deposit_tiny_model(scene: HostedScene) -> None:
    from broker.hosting.tiny_model import tiny_model_files

    story = scene.story
    issue_depositor_token(scene)
    story.step("the lab has a small causal language model: a tokenizer trained on a few "
               "sentences and a 2-layer GPT-2 with random weights, made in memory")
    folder = scene.scratch / "demo-chat"
    folder.mkdir(parents=True, exist_ok=True)
    scene.originals = []
    for path, data in tiny_model_files().items():
        (folder / path).write_bytes(data)
        scene.originals.append(folder / path)
        story.say(f"{len(data):>10} bytes  {path}")
    story.step(f"the lab deposits it as {scene.target}: encrypted on its machine, uploaded, "
               "verified and sealed by the broker")
    deposit = deposit_model(scene, scene.version, model=HOSTED_MODEL)
    story.summary.update(deposit_id=deposit["deposit_id"], sealed=True)


def _start_worker(scene: HostedScene) -> None:
    from broker import age
    from broker.client import credentials
    from broker.domain.principals import OPERATOR
    from broker.services import hosting

    story, escrow = scene.story, scene.escrow
    story.step(f"the operator makes a model worker account, {WORKER}, with its own age identity "
               "(escrow hosted worker create), and lets it host the version (escrow hosted "
               "allow)")
    identity = age.generate_x25519_identity()
    identity_file = write_identity(escrow, "worker-identity.txt", f"escrow demo {WORKER}",
                                   identity)
    config = settings_dir(escrow) / "worker-config"
    with escrow.uow() as uow:
        user, key, pair = hosting.create_worker_login(
            uow, OPERATOR, WORKER, str(identity.to_recipient()))
        account, key_id = user.id, key.id
    credentials.store(scene.url, {"access_token": pair.access_token,
                                  "refresh_token": pair.refresh_token,
                                  "expires_in": pair.expires_in},
                      f"model worker {WORKER}", config)
    story.say(f"account {account}, key {key_id}; its identity in {identity_file} (mode 0600), "
              f"its login in {config}")
    with escrow.uow() as uow:
        grant = hosting.allow_hosting(uow, OPERATOR, escrow.settings.policy_dir, HOSTED_MODEL,
                                      scene.version, WORKER, 1)
        story.say(f"hosting grant {grant.id}: {WORKER} may obtain the version's file keys "
                  "(each release on the audit log)")

    story.step(f"the model worker starts (escrow model-worker {scene.target}): it obtains the "
               "file keys, decrypts the files into memory only and loads the model")
    scene.worker_log = settings_dir(escrow) / "worker.log"
    env = {k: v for k, v in os.environ.items() if k not in ("ESCROW_TOKEN", "ESCROW_TOKEN_FILE")}
    env["ESCROW_CONFIG_DIR"] = str(config)
    with scene.worker_log.open("ab") as sink:
        scene.worker = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "model-worker", scene.target, "--identity",
             str(identity_file), "--broker", scene.url],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,  # its own process group: stop_worker ends all of it
        )
    serving = _wait_serving(scene)
    story.check(serving is not None, serving or "", "the model worker did not start: "
                + _tail(scene.worker_log))
    story.summary.update(worker_started=True, worker_pid=scene.worker.pid)


def _wait_serving(scene: HostedScene) -> str | None:
    """The worker's "serving … at URL as worker ID" line, once it registered; None if it
    exited or took too long."""
    assert scene.worker is not None and scene.worker_log is not None
    deadline = time.monotonic() + WORKER_START_S
    seen = scene.worker_log.stat().st_size  # an earlier run's lines are not this worker's
    while time.monotonic() < deadline:
        with scene.worker_log.open("rb") as log:
            log.seek(seen)
            for line in log.read().decode(errors="replace").splitlines():
                if line.startswith("serving "):
                    return line
        if scene.worker.poll() is not None:
            return None
        time.sleep(0.3)
    return None


def _tail(log: Path | None) -> str:
    lines = log.read_text(errors="replace").splitlines()[-15:] if log and log.exists() else []
    return "\n".join(lines)


def _ask_for_inference(scene: HostedScene) -> None:
    story, (researcher, reviewer) = scene.story, scene.people()
    story.step(f"the researcher asks for inference access to {scene.target} (escrow request "
               "--kind inference): to query the hosted model; no weights leave the escrow")
    made = researcher.post("/api/v1/requests", {
        "model": HOSTED_MODEL, "version": scene.version, "purpose": PURPOSE, "days": 7,
        "kind": "inference"})["request"]
    story.say(f"request {made['id']} is {made['state']} under policy "
              f"{made['decision']['policy']['id']}")
    decided = reviewer.post(f"/api/v1/requests/{quote(made['id'], safe='')}/approve",
                            {"comment": "approved by the escrow demo"})
    grant = decided.get("grant") or {}
    story.check(grant.get("kind") == "inference",
                f"the reviewer approved it: inference grant {grant.get('id')}, at most "
                f"{grant.get('requests_per_minute')} requests a minute and "
                f"{grant.get('tokens_per_day')} tokens a day",
                f"no inference grant was made: {decided['request']['state']}")
    scene.inference_grant_id = str(grant["id"])
    story.summary["inference_grant_id"] = scene.inference_grant_id


def _make_key(scene: HostedScene) -> None:
    story, (researcher, _) = scene.story, scene.people()
    story.step("the researcher makes an API key of the grant (escrow hosted key create)")
    made = researcher.post("/api/v1/hosted/keys", {"grant_id": scene.inference_grant_id})
    scene.key_id, scene.key = str(made["id"]), str(made["key"])
    story.say(f"API key {made['id']} for {made['model']} only: {scene.key[:8]}… (shown to the "
              "researcher once; the broker keeps its SHA-256)")
    story.summary["key_id"] = scene.key_id


class Refused(EscrowError):
    """A /v1 call the broker refused: its status and OpenAI-style error message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, hint="")
        self.status = status


def chat(url: str, key: str, model: str, stream: bool) -> tuple[str, dict[str, int], str]:
    """One chat completion through the broker's /v1 API: (text, usage, the client used). The
    official `openai` client if installed, else plain HTTP (the same request and answer)."""
    try:
        import openai
    except ImportError:
        return (*_chat_http(url, key, model, stream),
                "plain HTTP (the openai package is not installed; pip install openai for it)")
    return (*_chat_openai(openai, url, key, model, stream), "the official openai client")


def _chat_openai(openai: Any, url: str, key: str, model: str,
                 stream: bool) -> tuple[str, dict[str, int]]:
    client: Any = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
    try:
        if not stream:
            answer = client.chat.completions.create(model=model, messages=MESSAGES,
                                                    max_tokens=12, temperature=0)
            whole = answer.usage.model_dump() if answer.usage else {}
            return str(answer.choices[0].message.content or ""), whole
        pieces: list[str] = []
        usage: dict[str, int] = {}
        for chunk in client.chat.completions.create(model=model, messages=MESSAGES,
                                                    max_tokens=12, temperature=0, stream=True):
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
            if chunk.usage:
                usage = chunk.usage.model_dump()
        return "".join(pieces), usage
    except openai.APIStatusError as error:
        body = error.body if isinstance(error.body, dict) else {}
        raise Refused(error.status_code, str(body.get("message", error.message))) from None


def _chat_http(url: str, key: str, model: str, stream: bool) -> tuple[str, dict[str, int]]:
    import requests

    answer = requests.post(url + "/v1/chat/completions", timeout=120, stream=stream,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": model, "messages": MESSAGES, "max_tokens": 12,
                                 "temperature": 0, "stream": stream})
    if answer.status_code != 200:
        raise Refused(answer.status_code, str(answer.json().get("error", {}).get("message")))
    if not stream:
        body = answer.json()
        return str(body["choices"][0]["message"]["content"]), dict(body.get("usage") or {})
    pieces = []
    usage: dict[str, int] = {}
    for line in answer.iter_lines(decode_unicode=True):
        if not line or not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[len("data: "):])
        for choice in event.get("choices", []):
            pieces.append(choice.get("delta", {}).get("content") or "")
        usage = event.get("usage") or usage
    return "".join(pieces), dict(usage)


def _chat(scene: HostedScene) -> None:
    story = scene.story
    story.step(f"the researcher chats with {scene.target} through the broker's "
               "OpenAI-compatible API (POST /v1/chat/completions, the API key as bearer)")
    text, usage, client = chat(scene.url, scene.key, scene.target, stream=False)
    story.say(f"with {client}, base_url {scene.url}/v1")
    story.say(f"user: {MESSAGES[0]['content']}")
    story.say(f"{scene.target}: {text!r} (random weights: no sense, but the model's own "
              "greedy answer)")
    story.say(f"{usage.get('prompt_tokens')} prompt tokens, {usage.get('completion_tokens')} "
              "completion tokens")
    streamed, _, _ = chat(scene.url, scene.key, scene.target, stream=True)
    story.check(streamed == text and bool(text),
                "streamed (server-sent events), the same greedy text piece by piece",
                f"the streamed text {streamed!r} differs from {text!r}")
    story.summary.update(queried=True, client=client.split(" (")[0], completion=text)


def _show_usage(scene: HostedScene) -> None:
    from broker.services.hosted_usage import day_usage

    story, escrow = scene.story, scene.escrow
    story.step("the grant's usage today, counted by the broker (numbers only: no prompt or "
               "output text is stored; each ended day goes on the audit log as hosted.usage)")
    deadline = time.monotonic() + USAGE_WAIT_S
    while True:
        with escrow.uow() as uow:
            used = day_usage(uow, scene.inference_grant_id)
        if used["requests"] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    story.check(used["requests"] == 2 and used["output_tokens"] > 0,
                f"{used['requests']} requests, {used['input_tokens']} input tokens, "
                f"{used['output_tokens']} output tokens",
                f"the usage counted is {used}, not the 2 requests made")
    story.summary["usage"] = used


def _revoke_key(scene: HostedScene) -> None:
    story, (researcher, _) = scene.story, scene.people()
    story.step(f"the researcher revokes API key {scene.key_id} (escrow hosted key revoke)")
    done = researcher.delete(f"/api/v1/hosted/keys/{quote(scene.key_id, safe='')}")
    story.say(f"revoked at {done['revoked_at']}")
    story.step("the key's next request")
    refused = _refusal(scene.url, scene.key, scene.target)
    if refused is not None:
        story.say(f"refused ({refused.status}): {refused.message}")
    story.check(refused is not None and refused.status == 401, "refused at once",
                "a request with the revoked key was answered")
    assert refused is not None
    story.summary.update(key_revoked=True, key_refusal=refused.message)


def _refusal(url: str, token: str, target: str) -> Refused | None:
    """Why a chat query with `token` is refused, or None if it is answered."""
    try:
        chat(url, token, target, stream=False)
    except Refused as error:
        return error
    return None


def _stop_worker(scene: HostedScene) -> None:
    story = scene.story
    story.step("the operator stops the model worker (SIGINT): it deregisters from the broker "
               "and its memory, the only plaintext copy, goes with it")
    process = scene.worker
    code = stop_worker(scene)
    story.check(process is not None and code == 0,
                f"worker process {process.pid if process else '?'} exited {code}",
                f"the worker exited {code}: " + _tail(scene.worker_log))
    refused = _refusal(scene.url, scene.researcher_token, scene.target)
    if refused is not None:
        story.say(f"the researcher's next query ({refused.status}): {refused.message}")
    story.check(refused is not None and refused.status == 503,
                "no worker serves the version now", "a query after the worker stopped was "
                "answered")
    story.summary["worker_stopped"] = True


def stop_worker(scene: HostedScene) -> int | None:
    """Stop the worker this demo started, if it runs (SIGINT: it deregisters): its exit code."""
    from broker.cli.serving import stop_group

    if scene.worker is None:
        return None
    stop_group(scene.worker, timeout_s=30)
    code = scene.worker.returncode
    scene.worker = None
    return code
