"""Killed workers and brokers, on real processes: no job stays stuck, no worker is orphaned.

The broker runs in its own process (SQLite, objects in a real S3 server reached through a
`FaultProxy`), the worker in another. The proxy holds the store's answers back, so that a
verification is in flight, for certain, at the moment its worker is killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from faultproxy import HANG, PASS, FaultProxy
from live import ESCROW_BIN, start_broker

LEASE_S = 3


@pytest.fixture
def store_proxy(moto_endpoint):
    host, port = moto_endpoint.url.removeprefix("http://").split(":")
    with FaultProxy((host, int(port))) as proxy:
        yield proxy


@pytest.fixture
def broker(request, tmp_path: Path, moto_endpoint, store_proxy):
    """The broker, on its default SQLite database, or on each kind of database for a test
    that asks for `private_database_url`."""
    bucket = f"faults-{os.urandom(4).hex()}"
    moto_endpoint.client("s3").create_bucket(Bucket=bucket)
    database = (
        {"ESCROW_DATABASE_URL": request.getfixturevalue("private_database_url")}
        if "private_database_url" in request.fixturenames else {}
    )
    process = start_broker(tmp_path, {
        **database,
        "ESCROW_STORAGE_URL": f"s3://{bucket}/escrow",
        "ESCROW_S3_ENDPOINT_URL": f"http://{store_proxy.address}",
        "ESCROW_JOB_LEASE_S": str(LEASE_S),
        "ESCROW_IN_PROCESS_WORKER": "0",
        **moto_endpoint.env(),
    })
    yield process
    process.stop()


def deposit_state(broker, deposit_id: str) -> dict:
    request = urllib.request.Request(
        f"{broker.url}/api/v1/deposits/{deposit_id}",
        headers={"Authorization": f"Bearer {broker.token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def wait_for(what: str, check, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def start_worker():
    """start_worker(broker, log) -> an `escrow worker` process, killed at the end whatever
    happened (a failed test must not leave workers running)."""
    started: list[subprocess.Popen] = []

    def start(broker, log: Path) -> subprocess.Popen:
        process = subprocess.Popen([ESCROW_BIN, "worker"], env=broker.env,
                                   stdout=log.open("ab"), stderr=subprocess.STDOUT)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def submitted_deposit(broker, tmp_path: Path, files: int = 1) -> str:
    model = tmp_path / "model"
    model.mkdir()
    for n in range(files):
        (model / ("weights.bin" if n == 0 else f"shard-{n}.bin")).write_bytes(os.urandom(200_000))
    result = broker.escrow("deposit", str(model), "--model", "acme-ai/gpt-small",
                           "--version", "1", "--no-wait", "--json")
    return broker.last_json(result)["deposit_id"]


def test_a_worker_killed_mid_verification_is_replaced_within_its_lease(
    broker, store_proxy, tmp_path, start_worker
):
    deposit_id = submitted_deposit(broker, tmp_path)
    store_proxy.set_mode(HANG)  # the verification starts, then waits on the store
    first = start_worker(broker, tmp_path / "worker1.log")
    running = wait_for("the job to run", lambda: (
        (v := deposit_state(broker, deposit_id)["verification"]) and v["state"] == "running"
        and v))
    time.sleep(0.5)  # into the store read
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    killed_at = time.monotonic()
    store_proxy.set_mode(PASS)

    second = start_worker(broker, tmp_path / "worker2.log")
    try:
        # Taken over: running under another worker, or (between two looks) done already.
        wait_for("another worker to take the job over", lambda: (
            (d := deposit_state(broker, deposit_id))["state"] == "sealed"
            or d["verification"]["worker"] not in (None, running["worker"])))
        taken_after = time.monotonic() - killed_at
        sealed = wait_for("the seal", lambda: (
            (d := deposit_state(broker, deposit_id))["state"] == "sealed" and d))
        broker.escrow("verify", deposit_id)  # one more event, which no timer signs in time
    finally:
        second.terminate()
        second.wait(timeout=30)
    print(f"\nFIGURE worker death -> job running again: {taken_after:.1f} s (lease {LEASE_S} s)")
    assert taken_after < LEASE_S + 10
    assert sealed["verification"]["state"] == "done"
    assert sealed["verification"]["attempts"] == 2
    assert second.returncode == 0  # SIGTERM: a clean stop
    verified = broker.escrow("audit", "verify", "--json", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    events = audit_actions(broker)
    assert events.count("deposit.sealed") == 1
    assert events.count("deposit.verification_passed") == 2  # the worker's, the operator's
    # The worker's clean stop signed a checkpoint of the whole log.
    assert query(broker, "SELECT max(size) FROM audit_checkpoints") == [len(events)]


def audit_actions(broker) -> list[str]:
    """Every action on the broker's audit log, in order (read from its database)."""
    return query(broker, "SELECT action FROM audit_events ORDER BY seq")


def query(broker, sql: str) -> list:
    """The first column of `sql` run on the broker's database."""
    from sqlalchemy import create_engine, text

    from broker.config import load_settings

    engine = create_engine(load_settings(broker.env).database_url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(text(sql)))
    finally:
        engine.dispose()


SHARDS = 8


def running_jobs(broker) -> list[str]:
    """The workers holding a job now, one entry per running job."""
    return query(broker, "SELECT locked_by FROM jobs WHERE state = 'running' ORDER BY id")


def held_by_both(broker, first, second) -> bool:
    holders = running_jobs(broker)
    return len(holders) == 2 and {h.split(":")[1] for h in holders} == {
        str(first.pid), str(second.pid)}


def test_two_worker_processes_split_a_deposit_and_it_is_sealed_once(
    broker, store_proxy, tmp_path, start_worker, private_database_url
):
    deposit_id = submitted_deposit(broker, tmp_path, files=SHARDS)
    store_proxy.set_mode(HANG)  # each worker takes a file, then waits on the store
    first = start_worker(broker, tmp_path / "worker1.log")
    second = start_worker(broker, tmp_path / "worker2.log")
    wait_for("a file of the deposit in each worker", lambda: held_by_both(broker, first, second))
    shown = deposit_state(broker, deposit_id)["verification"]
    assert shown["state"] == "running" and len(shown["worker"].split(", ")) == 2
    store_proxy.set_mode(PASS)
    sealed = wait_for("the seal", lambda: (
        (d := deposit_state(broker, deposit_id))["state"] == "sealed" and d))
    for process in (first, second):
        process.terminate()
        process.wait(timeout=30)
    # Nobody's file was taken over: each worker finished the one it held, and others.
    assert query(broker, "SELECT attempts FROM jobs ORDER BY id") == [1] * SHARDS
    assert query(broker, "SELECT state FROM jobs ORDER BY id") == ["done"] * SHARDS
    assert {f["state"] for f in sealed["files"]} == {"verified"}
    assert sealed["verification"] == {"state": "done", "attempts": 1, "error": None,
                                      "next_attempt_at": None, "worker": None,
                                      "heartbeat_at": None}
    events = audit_actions(broker)
    assert events.count("deposit.sealed") == 1
    assert events.count("deposit.verification_passed") == 1


def test_when_one_of_two_workers_is_killed_mid_file_the_other_finishes_the_deposit(
    broker, store_proxy, tmp_path, start_worker, private_database_url
):
    deposit_id = submitted_deposit(broker, tmp_path, files=SHARDS)
    store_proxy.set_mode(HANG)
    first = start_worker(broker, tmp_path / "worker1.log")
    second = start_worker(broker, tmp_path / "worker2.log")
    wait_for("a file of the deposit in each worker", lambda: held_by_both(broker, first, second))
    time.sleep(0.5)  # into the store read
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    store_proxy.set_mode(PASS)
    try:
        sealed = wait_for("the seal", lambda: (
            (d := deposit_state(broker, deposit_id))["state"] == "sealed" and d))
    finally:
        second.terminate()
        second.wait(timeout=30)
    # The killed worker's file ran twice (its lease lapsed, the other took it over); the
    # others once each, all in the worker that lived.
    assert sorted(query(broker, "SELECT attempts FROM jobs")) == [1] * (SHARDS - 1) + [2]
    assert sealed["verification"]["attempts"] == 2
    events = audit_actions(broker)
    assert events.count("deposit.sealed") == 1
    assert events.count("deposit.verification_passed") == 1


def test_killing_the_broker_takes_its_worker_with_it(tmp_path: Path):
    from live import start_broker as start

    broker = start(tmp_path)
    try:
        worker = wait_for("the broker's worker", lambda: _worker_child(broker.process.pid))
        broker.process.send_signal(signal.SIGKILL)
        broker.process.wait(timeout=10)
        wait_for("the orphaned worker to stop", lambda: not _alive(worker), timeout_s=15)
    finally:
        broker.stop()


def _worker_child(parent: int) -> int | None:
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"worker" in cmdline:
            return int(child)
    return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
