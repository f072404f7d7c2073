"""A mistyped --broker (issue 15 item 8): the real `escrow` commands exit at once, name
--broker and the URL, and never promise a resume when nothing was sent."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from live import ESCROW_BIN, free_port


@pytest.mark.parametrize(
    "command",
    [
        ["login", "{url}"],
        ["whoami", "--broker", "{url}", "--token", "esk_x_y"],
        [
            "deposit",
            "{model}",
            "--model",
            "acme-ai/m",
            "--version",
            "1",
            "--broker",
            "{url}",
            "--token",
            "esk_x_y",
        ],
        ["audit", "checkpoint", "--broker", "{url}"],
    ],
    ids=["login", "whoami", "deposit", "audit"],
)
def test_a_refused_broker_url_fails_at_once_naming_broker(
    tmp_path: Path, command: list[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")},
        "ESCROW_CONFIG_DIR": str(tmp_path / "config"),
        # the defaults would wait 21-27 s before giving up; nothing may wait at all here
        "ESCROW_CLIENT_RETRIES": "5",
        "ESCROW_CLIENT_BACKOFF_S": "4",
    }
    args = [a.format(url=url, model=model) for a in command]
    started = time.monotonic()
    result = subprocess.run(
        [ESCROW_BIN, *args], env=env, capture_output=True, text=True, timeout=60
    )
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert took < 4, f"took {took:.1f} s"  # one attempt, no back-off
    assert f"cannot reach a broker at {url}: connection refused" in result.stderr
    assert "check --broker (or ESCROW_BROKER)" in result.stderr
    assert "retrying" not in result.stderr
    assert "nothing finished is lost" not in result.stderr
    assert "Traceback" not in result.stderr
