"""The object store stopped in the middle of a deposit, then restarted empty (a store restored
from an old backup, a new bucket): what the user is told is true, the deposit finishes by
running the same command again, and a sealed deposit whose objects are gone is reported.

The S3 server is a real moto process, reached through a `FaultProxy` so that a new server on
another port can take the old one's place at the same address.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import servers
from faultproxy import RESET, TO_SERVER, FaultProxy
from live import ESCROW_BIN, require_part, start_broker
from test_worker_faults import audit_actions

BUCKET = "faults-store"


def model(tmp_path: Path, name: str, files: int, size: int) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    for i in range(files):
        (directory / f"shard-{i}.bin").write_bytes(os.urandom(size))
    return directory


def healthz(broker) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(broker.url + "/healthz", timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


class ResetAfter:
    """The proxy's tap: after `limit` bytes towards the store, the store "stops": every
    connection is reset from then on (as a stopped server's port answers)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.sent, self.fired = limit, 0, False
        self.proxy: FaultProxy | None = None

    def __call__(self, direction: str, data: bytes) -> bool:
        if direction == TO_SERVER and not self.fired and self.proxy is not None:
            self.sent += len(data)
            if self.sent > self.limit:
                self.fired = True
                self.proxy.mode = RESET
                return True
        return False


def start_s3(tmp_path: Path, name: str):
    command = servers.moto_server_command()
    require_part(command is not None, "moto_server (pip install 'moto[server]')")
    return servers.moto_server(tmp_path / name, command)


def test_a_store_that_stops_then_comes_back_empty(tmp_path: Path):
    tap = ResetAfter(limit=3_000_000)
    with FaultProxy(("127.0.0.1", 1), tap=tap) as proxy, start_s3(tmp_path, "s3-a") as first:
        tap.proxy = proxy
        proxy.target = ("127.0.0.1", int(first.url.rsplit(":", 1)[1]))
        first.client("s3").create_bucket(Bucket=BUCKET)
        broker = start_broker(tmp_path / "broker", {
            "ESCROW_STORAGE_URL": f"s3://{BUCKET}/escrow",
            "ESCROW_S3_ENDPOINT_URL": f"http://{proxy.address}",
            "ESCROW_CLIENT_RETRIES": "1",
            "ESCROW_CLIENT_BACKOFF_S": "0.05",
            **first.env(),
        })
        try:
            tap.limit += tap.sent  # the broker's own start-up traffic does not count
            sealed = broker.last_json(broker.escrow(
                "deposit", str(model(tmp_path, "small", 1, 1000)), "--model",
                "acme-ai/gpt-small", "--version", "1", "--json"))
            assert sealed["state"] == "sealed"
            tap.limit += tap.sent

            # The store stops in the middle of the next deposit.
            big = model(tmp_path, "big", 4, 2_000_000)
            command = [ESCROW_BIN, "deposit", str(big), "--model", "acme-ai/gpt-small",
                       "--version", "2", "--jobs", "2", "--json"]
            stopped = subprocess.run(command, env=broker.env, capture_output=True, text=True,
                                     timeout=120)
            assert tap.fired
            assert stopped.returncode != 0
            said = stopped.stderr
            print(f"\nTOLD when the store stopped: {said.strip().splitlines()[-1]}")
            assert "object store" in said, said
            assert "broker" not in said.split("object store")[0][-40:], said  # not blamed
            status, health = healthz(broker)
            assert status == 503 and not health["checks"]["object_store"]["ok"]
            assert health["checks"]["database"]["ok"]

            # It comes back empty: a new server, a new bucket, at the same address.
            with start_s3(tmp_path, "s3-b") as second:
                second.client("s3").create_bucket(Bucket=BUCKET)
                proxy.target = ("127.0.0.1", int(second.url.rsplit(":", 1)[1]))
                proxy.set_mode("pass")
                rerun = subprocess.run(command, env=broker.env, capture_output=True,
                                       text=True, timeout=180)
                assert rerun.returncode == 0, rerun.stderr
                deposit = broker.last_json(rerun)
                assert deposit["state"] == "sealed"
                assert broker.last_json(
                    broker.escrow("verify", deposit["deposit_id"], "--json"))["ok"] is True

                # The deposit sealed before the loss: its objects are gone, and it says so.
                lost = broker.escrow("verify", sealed["deposit_id"], "--json", check=False)
                assert lost.returncode != 0
                [problem] = [f["problem"] for f in broker.last_json(lost)["files"]]
                assert "no such object" in problem
                assert broker.escrow("audit", "verify", check=False).returncode == 0
                actions = audit_actions(broker)
                assert actions.count("deposit.sealed") == 2
                assert actions.count("deposit.created") == 2
        finally:
            broker.stop()


@pytest.fixture(autouse=True)
def _no_aws_leak(monkeypatch):
    """The broker gets the test server's credentials only, never the developer's."""
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
