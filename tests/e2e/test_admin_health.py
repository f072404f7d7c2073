"""`escrow admin health` (the command the broker's 503 hints name): one line per part, exit 1
if any part is down."""

from __future__ import annotations

import json
import subprocess

from live import ESCROW_BIN, free_port


def test_admin_health_lists_every_part_and_exits_0_when_all_answer(broker_server):
    result = broker_server.escrow("admin", "health")
    lines = result.stdout.strip().splitlines()
    assert [line.split()[1].rstrip(":") for line in lines[:-1]] == [
        "database", "object", "key"]
    assert all(line.startswith("ok  ") for line in lines[:-1])
    assert lines[-1] == "all parts answer"
    checks = broker_server.last_json(broker_server.escrow("admin", "health", "--json"))
    assert checks["ok"] is True and checks["down"] == []
    assert [c["name"] for c in checks["checks"]] == ["database", "object store", "key custody"]


def test_admin_health_names_the_part_that_is_down_and_exits_1(broker_server):
    dead = f"postgresql+psycopg://escrow@127.0.0.1:{free_port()}/escrow"
    env = {**broker_server.env, "ESCROW_DATABASE_URL": dead}
    result = subprocess.run([ESCROW_BIN, "admin", "health", "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is False and report["down"] == ["database"]
    database = report["checks"][0]
    assert database["name"] == "database" and database["ok"] is False and database["detail"]
    assert all(c["ok"] for c in report["checks"][1:])
    text = subprocess.run([ESCROW_BIN, "admin", "health"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert text.returncode == 1
    assert text.stdout.splitlines()[0].startswith("DOWN  database: ")
    assert text.stdout.strip().splitlines()[-1] == "1 part(s) down: database"
