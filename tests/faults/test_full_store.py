"""A full local store (a byte quota, which acts as a small disk would) in the middle of a
deposit: the depositor is told the store is full and what to do, nothing half-written is
counted, and once there is room the same command finishes the deposit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from live import ESCROW_BIN, start_broker
from test_worker_faults import audit_actions

FILES, FILE_SIZE = 3, 2_000_000


def test_a_full_store_is_said_and_the_deposit_finishes_once_there_is_room(tmp_path: Path):
    broker = start_broker(tmp_path / "broker", {
        "ESCROW_LOCAL_STORE_QUOTA_BYTES": str(FILES * FILE_SIZE // 2),
        "ESCROW_CLIENT_RETRIES": "1",
        "ESCROW_CLIENT_BACKOFF_S": "0.05",
    })
    try:
        model = tmp_path / "model"
        model.mkdir()
        for i in range(FILES):
            (model / f"shard-{i}.bin").write_bytes(os.urandom(FILE_SIZE))
        command = [ESCROW_BIN, "deposit", str(model), "--model", "acme-ai/gpt-small",
                   "--version", "1", "--jobs", "1"]
        full = subprocess.run(command, env=broker.env, capture_output=True, text=True,
                              timeout=120)
        assert full.returncode == 1, full.stderr
        assert "the object store is full" in full.stderr
        assert "ESCROW_LOCAL_STORE_QUOTA_BYTES" in full.stderr  # what the operator can do
        assert "went away" not in full.stderr and "unreachable" not in full.stderr
        assert "retrying" not in full.stderr  # a full store is not fixed by retrying

        broker.stop()  # the operator makes room
        broker.env["ESCROW_LOCAL_STORE_QUOTA_BYTES"] = str(4 * FILES * FILE_SIZE)
        broker.start()
        rerun = subprocess.run([*command, "--json"], env=broker.env, capture_output=True,
                               text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert broker.last_json(rerun)["state"] == "sealed"
        assert broker.escrow("audit", "verify", check=False).returncode == 0
        actions = audit_actions(broker)
        assert actions.count("deposit.created") == 1
        assert actions.count("deposit.file_uploaded") == FILES  # each file once
        assert actions.count("deposit.sealed") == 1
    finally:
        broker.stop()
