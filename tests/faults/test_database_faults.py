"""PostgreSQL behind a proxy that hangs or resets: the broker process answers within its
bounds, says the database is the problem, and recovers by itself when it comes back."""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request

import pytest
from faultproxy import HANG, PASS, RESET, FaultProxy
from live import postgres_url, start_broker

STATEMENT_S = 2  # ESCROW_DB_STATEMENT_TIMEOUT_S: a call gives up after this plus 5 s


@pytest.fixture
def database_proxy(postgres_template):
    admin, template, created = postgres_template
    name = f"escrow_f_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    created.append(name)
    with FaultProxy(("127.0.0.1", 5432)) as proxy:
        yield proxy, postgres_url(name).replace("127.0.0.1:5432", proxy.address)


@pytest.fixture
def broker(tmp_path, database_proxy):
    _proxy, url = database_proxy
    process = start_broker(tmp_path, {
        "ESCROW_DATABASE_URL": url,
        "ESCROW_DB_STATEMENT_TIMEOUT_S": str(STATEMENT_S),
        "ESCROW_DB_CONNECT_TIMEOUT_S": "2",
        "ESCROW_IN_PROCESS_WORKER": "0",
    })
    yield process
    process.stop()


def timed_get(broker, path: str) -> tuple[float, int, dict]:
    request = urllib.request.Request(
        broker.url + path, headers={"Authorization": f"Bearer {broker.token}"}
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, body = response.status, json.load(response)
    except urllib.error.HTTPError as error:
        status, body = error.code, json.load(error)
    return time.monotonic() - started, status, body


def test_a_hung_database_gets_503_in_seconds_and_the_broker_recovers(broker, database_proxy):
    proxy, _url = database_proxy
    assert timed_get(broker, "/healthz")[1] == 200
    proxy.set_mode(HANG)
    worst = 0.0
    for path in ("/healthz", "/api/v1/me", "/healthz", "/api/v1/me"):
        took, status, body = timed_get(broker, path)
        worst = max(worst, took)
        assert status == 503, body
        if path == "/healthz":
            assert took < 5, took  # its own bound: 3 s
            detail = body["checks"]["database"]["detail"]
            assert "did not answer" in detail or "timeout expired" in detail, detail
        else:
            assert took < STATEMENT_S + 5 + 3, took
            assert "database" in body["detail"] and "nothing was changed" in body["detail"]
    print(f"\nFIGURE worst answer time with a hung database: {worst:.1f} s "
          f"(statement timeout {STATEMENT_S} s)")
    proxy.set_mode(PASS)
    took, status, _ = timed_get(broker, "/healthz")
    assert status == 200


def test_a_database_that_resets_connections_gets_503_and_the_broker_recovers(
    broker, database_proxy
):
    proxy, _url = database_proxy
    proxy.set_mode(RESET)
    took, status, body = timed_get(broker, "/api/v1/me")
    assert status == 503 and took < 5
    assert "database" in body["detail"]
    proxy.set_mode(PASS)
    deadline = time.monotonic() + 10
    while (status := timed_get(broker, "/api/v1/me")[1]) != 200:
        assert time.monotonic() < deadline, status
