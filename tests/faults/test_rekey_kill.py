"""A rekey whose worker is killed with SIGKILL mid-file resumes in the next worker: the files
already re-encrypted and checked are not redone, the one in flight is redone under its new
name, and the deposit ends switched once, consistent (verified by decrypting and hashing), on
each kind of database. The broker and workers are real processes; the store is a real S3 server
behind a `FaultProxy` that stalls the third file's upload, so the kill lands inside a rekey."""

from __future__ import annotations

import json
import signal
import time

import test_worker_faults as faults
from faultproxy import HANG, PASS
from test_worker_faults import LEASE_S, deposit_state, query, submitted_deposit, wait_for

# the fixtures of the worker fault tests: a broker process on S3 behind a proxy, workers
broker, store_proxy, start_worker = faults.broker, faults.store_proxy, faults.start_worker

TARGET = "acme-ai/gpt-small@1"
FILES = 4


def rekey_state(broker) -> dict:
    shown = broker.escrow("admin", "version", "show", TARGET, "--json")
    return json.loads(shown.stdout.strip().splitlines()[-1])


def test_a_rekey_killed_mid_file_resumes_and_switches_once(
    broker, store_proxy, tmp_path, start_worker, private_database_url
):
    deposit_id = submitted_deposit(broker, tmp_path, files=FILES)
    sealer = start_worker(broker, tmp_path / "worker0.log")
    wait_for("the seal", lambda: deposit_state(broker, deposit_id)["state"] == "sealed")
    sealer.terminate()
    sealer.wait(timeout=30)

    queued = broker.escrow("admin", "version", "rekey", TARGET, "--reason", "leak 9", "--json")
    assert broker.last_json(queued)["state"] == "queued"

    # The store stalls once the third file's new payload starts to upload: files 0 and 1 are
    # re-encrypted, checked and recorded by then; the kill lands inside file 2.
    def stall_at_third_file(direction: str, data: bytes) -> bool:
        if b"files/2.r1.payload" in data:
            store_proxy.mode = HANG  # under the proxy's lock: set_mode would wait for it
        return False

    store_proxy.tap = stall_at_third_file
    first = start_worker(broker, tmp_path / "worker1.log")
    wait_for("the third file's upload to stall", lambda: store_proxy.mode == HANG)
    time.sleep(0.5)
    done_before = query(broker, "SELECT file_idx FROM rekey_files ORDER BY file_idx")
    headers_before = query(broker, "SELECT header FROM rekey_files ORDER BY file_idx")
    assert done_before == [0, 1]
    assert rekey_state(broker)["state"] == "running"
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    store_proxy.tap = None
    store_proxy.set_mode(PASS)

    second = start_worker(broker, tmp_path / "worker2.log")
    try:
        done = wait_for("the rekey to end", lambda: (
            (r := rekey_state(broker))["state"] in ("done", "failed") and r),
            timeout_s=LEASE_S + 90)
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert done["state"] == "done", done
    assert done["files_done"] == FILES and done["old_objects_deleted"] == 2 * FILES
    # not redone: the first two files keep the headers the killed worker recorded
    assert query(broker, "SELECT header FROM rekey_files WHERE file_idx < 2 "
                         "ORDER BY file_idx") == headers_before
    assert query(broker, "SELECT attempts FROM jobs WHERE kind = 'rekey'") == [2]
    assert query(broker, "SELECT generation FROM deposits") == [1]
    headers = query(broker, "SELECT header FROM deposit_files ORDER BY idx")
    assert headers == query(broker, "SELECT header FROM rekey_files ORDER BY file_idx")
    # consistent: every new object decrypts with the new identity to the deposited SHA-256
    verified = broker.escrow("verify", deposit_id, "--json", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    actions = query(broker, "SELECT action FROM audit_events ORDER BY seq")
    assert actions.count("version.rekey_requested") == 1
    assert actions.count("version.rekeyed") == 1
    assert "version.rekey_failed" not in actions
    assert broker.escrow("audit", "verify", "--json", check=False).returncode == 0
