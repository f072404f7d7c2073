"""`escrow requests withdraw` and `escrow grants renew` against a real broker process."""

from __future__ import annotations

import os

import pytest
from access_support import person_token
from live import start_broker

from broker import age


@pytest.fixture
def broker(tmp_path, policy_dir):
    process = start_broker(tmp_path / "broker", {"ESCROW_POLICY_DIR": str(policy_dir)})
    yield process
    process.stop()


def test_withdraw_a_request_then_renew_a_grant_from_the_command_line(broker, tmp_path):
    model = tmp_path / "renewable-small"
    model.mkdir()
    (model / "model.safetensors").write_bytes(os.urandom(20_000))
    broker.escrow("deposit", str(model), "--model", "acme-ai/renewable-small", "--version", "1")
    rosa = ["--token", person_token(broker, "rosa@uni.example")]
    rita = ["--token", person_token(broker, "rita@acme.example", (("acme-ai", "reviewer"),))]
    identity = tmp_path / "key.txt"
    identity.write_text(age.generate_x25519_identity().encode() + "\n")
    broker.escrow("keys", "add", "--identity", str(identity), *rosa)
    broker.escrow("nda", "sign", "acme-research-nda", "--name", "Rosa Example", "--yes", *rosa)
    target = "acme-ai/renewable-small@1"

    first = broker.last_json(broker.escrow("request", target, "--purpose", "study", "--json",
                                           *rosa))["request"]["id"]
    withdrawn = broker.escrow("requests", "withdraw", first, *rosa)
    assert f"{first}: {target} is withdrawn" in withdrawn.stdout
    again = broker.escrow("requests", "withdraw", first, "--json", *rosa, check=False)
    assert again.returncode == 1 and "withdrawn already" in again.stderr
    assert broker.last_json(again)["error"] == "conflict"
    listed = broker.escrow("requests", *rosa)
    assert f"{first}: {target} withdrawn" in listed.stdout

    second = broker.last_json(broker.escrow("request", target, "--purpose", "study", "--json",
                                            *rosa))["request"]["id"]
    grant = broker.last_json(broker.escrow("review", "approve", second, "--json",
                                           *rita))["grant"]

    asked = broker.escrow("grants", "renew", grant["id"], "--days", "60", *rosa)
    assert f"(renewal of grant {grant['id']})" in asked.stdout
    assert "is pending" in asked.stdout and "clamped to 30 days" in asked.stdout
    duplicate = broker.escrow("grants", "renew", grant["id"], "--json", *rosa, check=False)
    assert duplicate.returncode == 1 and "pending already" in duplicate.stderr

    queue = broker.escrow("review", "list", *rita)
    assert f"renews grant {grant['id']}" in queue.stdout
    [pending] = broker.last_json(broker.escrow("review", "list", "--json", *rita))["requests"]
    renewal = broker.last_json(broker.escrow("review", "approve", pending["id"], "--json",
                                             *rita))["grant"]
    assert renewal["not_before"] == grant["expires_at"]
    assert renewal["key_id"] == grant["key_id"]
    mine = broker.last_json(broker.escrow("grants", "--json", *rosa))["grants"]
    assert {(g["id"], g["state"], g["renews_grant_id"]) for g in mine} == {
        (grant["id"], "active", None), (renewal["id"], "not-yet-valid", grant["id"])}
    shown = broker.escrow("grants", *rosa)
    assert f"renews {grant['id']}" in shown.stdout
