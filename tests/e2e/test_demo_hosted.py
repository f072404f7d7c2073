"""`escrow demo --hosted`: the hosted-access story against a real broker process (embedded
defaults: SQLite, local store, local key file), with a real `escrow model-worker` process that the
demo starts and stops. Needs the serve extra (and `openai`, for the client's path)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

from live import ESCROW_BIN, require_part

REPO = Path(__file__).resolve().parents[2]
SERVE_PARTS = ("torch", "transformers", "tokenizers", "safetensors")


def _blocked(base: Path, module: str) -> str:
    """A folder that, first on PYTHONPATH, makes `import module` fail as if not installed."""
    folder = base / f"no-{module}"
    (folder / module).mkdir(parents=True)
    (folder / module / "__init__.py").write_text(
        f"raise ImportError('{module} is blocked by the test', name='{module}')\n")
    return str(folder)


def _gone(pid: int) -> bool:
    """No process of the group `pid` led is left (the worker ran in a session of its own)."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _actions(env: dict[str, str]) -> list[str]:
    from sqlalchemy import select

    from broker.adapters.db.models import AuditEvent
    from broker.config import load_settings
    from broker.container import build_escrow

    escrow = build_escrow(load_settings(env))
    try:
        with escrow.uow() as uow:
            return list(uow.session.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)))
    finally:
        escrow.engine.dispose()


def test_the_hosted_demo_queries_a_hosted_model_then_revokes_its_key_and_stops_the_worker(
        broker_server, tmp_path):
    require_part(all(importlib.util.find_spec(n) for n in (*SERVE_PARTS, "openai")),
                 "the serve extra and openai (pip install -e '.[test,serve]')")
    broker_server.env["ESCROW_POLICY_DIR"] = str(REPO / "policies")
    result = broker_server.escrow("demo", "--hosted", "--broker", broker_server.url, "--json",
                                  check=False)
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    summary = broker_server.last_json(result)
    assert summary["ok"] is True and summary["hosted"] is True
    assert summary["model"] == "acme-ai/demo-chat" and summary["started_broker"] is False
    assert summary["sealed"] and summary["worker_started"] and summary["queried"]
    assert summary["client"] == "the official openai client"
    assert summary["completion"]
    usage = summary["usage"]
    assert usage["requests"] == 2 and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert summary["key_revoked"] and "revoked" in summary["key_refusal"]
    assert summary["worker_stopped"] and _gone(summary["worker_pid"])

    story = result.stdout
    target = f"acme-ai/demo-chat@{summary['version']}"
    for words in (f"ok: serving {target} at http://127.0.0.1:", "inference grant gr_",
                  "with the official openai client", "ok: streamed (server-sent events)",
                  "ok: 2 requests", "refused (401): the API key is invalid or revoked",
                  "exited 0", f"(503): no model worker is serving {target}"):
        assert words in story, words

    actions = _actions(broker_server.env)
    for action in ("model_worker.loaded", "hosted_key.created", "hosted_key.revoked",
                   "model_worker.stopped"):
        assert actions.count(action) == 1, action
    assert actions.count("key.released") == 4  # the worker's, one per file of the tiny model

    # Again on the same data, without the openai package: plain HTTP, the same story.
    broker_server.env["PYTHONPATH"] = _blocked(tmp_path, "openai")
    again = broker_server.escrow("demo", "--hosted", "--broker", broker_server.url, "--json",
                                 check=False)
    assert again.returncode == 0, f"stdout: {again.stdout}\nstderr: {again.stderr}"
    second = broker_server.last_json(again)
    assert second["ok"] is True and second["version"] != summary["version"]
    assert second["client"] == "plain HTTP" and second["completion"] == summary["completion"]
    assert "with plain HTTP (the openai package is not installed" in again.stdout
    assert _gone(second["worker_pid"])


def test_without_the_serve_extra_the_hosted_demo_says_how_to_install_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")}
    env.update(ESCROW_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=_blocked(tmp_path, "torch"))
    result = subprocess.run([ESCROW_BIN, "demo", "--hosted", "--json"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "needs the serve extra (torch missing)" in result.stderr
    assert "pip install 'weights-escrow[serve]'" in result.stderr
    assert "[1]" not in result.stdout  # nothing was done
    assert not (tmp_path / "data").exists()

