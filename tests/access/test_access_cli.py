"""`escrow request`, `review`, `grants` against a real broker process, as people run them."""

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


def test_request_review_grants_and_revoke_from_the_command_line(broker, tmp_path):
    model = tmp_path / "gpt-small"
    model.mkdir()
    (model / "model.safetensors").write_bytes(os.urandom(50_000))
    deposited = broker.last_json(broker.escrow(
        "deposit", str(model), "--model", "acme-ai/gpt-small", "--version", "2024-05", "--json"))
    assert deposited["state"] == "sealed"

    rosa = ["--token", person_token(broker, "rosa@uni.example")]
    rita = ["--token", person_token(broker, "rita@acme.example", (("acme-ai", "reviewer"),))]
    target = "acme-ai/gpt-small@2024-05"

    refused = broker.escrow("request", target, "--purpose", "study", "--json", *rosa,
                            check=False)
    assert refused.returncode == 1
    assert "missing" in refused.stderr and "recorded as denied" in refused.stderr
    assert broker.last_json(refused)["error"] == "request refused"

    identity = tmp_path / "key.txt"
    identity.write_text(age.generate_x25519_identity().encode() + "\n")
    broker.escrow("keys", "add", "--identity", str(identity), *rosa)
    broker.escrow("nda", "sign", "acme-research-nda", "--name", "Rosa Example", "--yes", *rosa)

    explained = broker.last_json(broker.escrow(
        "request", target, "--purpose", "study", "--explain", "--json", *rosa))
    assert explained["would_be"] == "pending"

    made = broker.escrow("request", target, "--purpose", "study", "--days", "60", *rosa)
    assert "is pending" in made.stdout and "clamped to 30 days" in made.stdout
    listed = broker.last_json(broker.escrow("review", "list", "--json", *rita))
    [pending] = listed["requests"]
    assert pending["researcher"]["email"] == "rosa@uni.example"

    approved = broker.last_json(broker.escrow(
        "review", "approve", pending["id"], "--comment", "ok", "--json", *rita))
    assert approved["request"]["state"] == "approved"
    grant_id = approved["grant"]["id"]
    [mine] = broker.last_json(broker.escrow("grants", "--json", *rosa))["grants"]
    assert (mine["id"], mine["state"]) == (grant_id, "active")

    revoked = broker.last_json(broker.escrow("review", "revoke", grant_id, "--json", *rita))
    assert revoked["state"] == "revoked"
    again = broker.escrow("review", "revoke", grant_id, *rita, check=False)
    assert again.returncode == 1 and "revoked already" in again.stderr


def test_hosted_access_from_the_command_line_needs_no_key(broker, tmp_path, policy_dir):
    from test_keyless_hosted import HOSTED_POLICY

    (policy_dir / "acme-ai-hosted.yaml").write_text(HOSTED_POLICY)
    model = tmp_path / "hosted-small"
    model.mkdir()
    (model / "model.safetensors").write_bytes(os.urandom(20_000))
    broker.escrow("deposit", str(model), "--model", "acme-ai/hosted-small", "--version", "1")
    kim = ["--token", person_token(broker, "kim@uni.example")]  # no key registered
    target = "acme-ai/hosted-small@1"

    named = broker.escrow("request", target, "--kind", "inference", "--key", "rk_0123456789abcdef",
                          "--purpose", "study", *kim, check=False)
    assert named.returncode == 1 and "hosted access needs no key" in named.stderr
    assert "leave the key out" in named.stderr
    made = broker.escrow("request", target, "--kind", "inference", "--purpose", "study", *kim)
    assert "approved" in made.stdout, made.stdout
    listed = broker.escrow("grants", *kim).stdout
    assert "inference access through /v1, no key" in listed, listed
    weights = broker.escrow("request", target, "--purpose", "study", *kim, check=False)
    assert weights.returncode == 1 and "a proven key" in weights.stderr
