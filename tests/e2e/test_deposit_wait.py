"""`escrow deposit` waits for the seal within bounds (issue 14): a verification that fails ends
the wait with the broker's reason, and one that does not finish in --wait-timeout ends it with
what is known and how to keep waiting. Real parts: `escrow serve` without its worker, `escrow
deposit` and `escrow worker --once` as processes."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from live import ESCROW_BIN, BrokerProcess, start_broker

EXIT_FAILED, EXIT_STILL_VERIFYING = 3, 5


@pytest.fixture
def broker_without_worker(tmp_path: Path):
    broker = start_broker(tmp_path, {"ESCROW_IN_PROCESS_WORKER": "0"})
    yield broker
    broker.stop()


def model(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "w.bin").write_bytes(os.urandom(200_000))
    return directory


def state(broker: BrokerProcess, deposit_id: str) -> str:
    request = urllib.request.Request(f"{broker.url}/api/v1/deposits/{deposit_id}",
                                     headers={"Authorization": f"Bearer {broker.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["state"]


def deposit_args(directory: Path, version: str, *more: str) -> list[str]:
    return [ESCROW_BIN, "deposit", str(directory), "--model", "acme-ai/gpt-small",
            "--version", version, "--json", *more]


def test_a_wait_that_outlasts_wait_timeout_ends_with_what_is_known(
        broker_without_worker: BrokerProcess, tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(deposit_args(model(tmp_path), "1", "--wait-timeout", "2s"),
                            env=broker_without_worker.env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == EXIT_STILL_VERIFYING, result.stderr
    assert time.monotonic() - started < 60
    assert "is still verifying after 2 s (--wait-timeout)" in result.stderr
    assert "run the same command again to keep waiting" in result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["error"] == "still verifying" and answer["deposit_id"]


def test_a_bad_wait_timeout_is_refused_by_name(broker_without_worker: BrokerProcess,
                                               tmp_path: Path) -> None:
    result = subprocess.run(deposit_args(model(tmp_path), "2", "--wait-timeout", "soon"),
                            env=broker_without_worker.env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "--wait-timeout 'soon' is not a duration" in result.stderr


def test_a_verification_that_fails_ends_the_wait_with_the_reason(
        broker_without_worker: BrokerProcess, tmp_path: Path) -> None:
    broker = broker_without_worker
    process = subprocess.Popen(deposit_args(model(tmp_path), "3", "--wait-timeout", "2m"),
                               env=broker.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 60
        payloads: list[Path] = []
        while not payloads and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            payloads = list((broker.data_dir / "objects" / "deposits").glob("*/files/0.payload"))
            time.sleep(0.05)
        deposit_id = payloads[0].parent.parent.name
        while state(broker, deposit_id) != "verifying" and time.monotonic() < deadline:
            time.sleep(0.05)
        data = bytearray(payloads[0].read_bytes())  # the store's copy is damaged
        data[100] ^= 1
        payloads[0].write_bytes(bytes(data))
        broker.escrow("worker", "--once")
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == EXIT_FAILED, stderr
    assert "failed verification" in stderr and "w.bin" in stderr
    answer = json.loads(stdout.strip().splitlines()[-1])
    assert answer["error"] == "deposit failed verification"
    assert answer["hint"]
