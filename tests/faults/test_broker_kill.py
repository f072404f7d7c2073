"""kill -9 of the broker, and of the client, in the middle of a deposit: nothing is lost or
made twice; the same command run again finishes the deposit, and the audit log verifies.

The client reaches the broker (API and the local store's signed URLs) through a `FaultProxy`
that stops forwarding once part of the upload has passed: that is the chosen point, a
deposit in flight, where both processes are killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from faultproxy import HANG, TO_SERVER, FaultProxy
from live import ESCROW_BIN, start_broker
from test_worker_faults import audit_actions, wait_for

FILES, FILE_SIZE = 6, 1_500_000


class StopAfter:
    """The proxy's tap: after `limit` bytes towards the broker, stop forwarding (hang)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.sent, self.fired = limit, 0, False
        self.proxy: FaultProxy | None = None

    def __call__(self, direction: str, data: bytes) -> bool:
        if direction == TO_SERVER and not self.fired:
            self.sent += len(data)
            if self.sent > self.limit and self.proxy is not None:
                self.fired = True
                self.proxy.mode = HANG  # read by the proxy's loop at its next turn
        return False


def test_a_deposit_survives_kill_9_of_broker_and_client(tmp_path: Path):
    tap = StopAfter(limit=FILES * FILE_SIZE // 2)
    with FaultProxy(("127.0.0.1", 1), tap=tap) as proxy:
        tap.proxy = proxy
        public = f"http://{proxy.address}"
        broker = start_broker(tmp_path / "broker", {"ESCROW_PUBLIC_URL": public})
        proxy.target = ("127.0.0.1", int(broker.url.rsplit(":", 1)[1]))
        try:
            model = tmp_path / "model"
            model.mkdir()
            for i in range(FILES):
                (model / f"shard-{i}.bin").write_bytes(os.urandom(FILE_SIZE))
            command = [ESCROW_BIN, "deposit", str(model), "--model", "acme-ai/gpt-small",
                       "--version", "1", "--jobs", "2", "--json"]
            env = {**broker.env, "ESCROW_BROKER": public}
            client = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
            wait_for("the upload to stall at the chosen point", lambda: proxy.mode == HANG)
            time.sleep(0.5)
            os.killpg(broker.process.pid, signal.SIGKILL)  # the arbiter, its workers, the worker
            broker.process.wait(timeout=10)
            client.send_signal(signal.SIGKILL)
            client.wait(timeout=10)

            proxy.mode = "pass"
            broker.start()
            proxy.target = ("127.0.0.1", int(broker.url.rsplit(":", 1)[1]))
            rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            assert rerun.returncode == 0, rerun.stderr
            deposit = broker.last_json(rerun)
            assert deposit["state"] == "sealed"
            assert len(deposit["files"]) == FILES
            verified = broker.escrow("verify", deposit["deposit_id"], "--json")
            assert broker.last_json(verified)["ok"] is True
            assert broker.escrow("audit", "verify", check=False).returncode == 0
            actions = audit_actions(broker)
            assert actions.count("deposit.created") == 1  # the rerun continued that deposit
            assert actions.count("deposit.file_uploaded") == FILES  # each file once
            assert actions.count("deposit.finalized") == 1
            assert actions.count("deposit.sealed") == 1
        finally:
            broker.stop()
