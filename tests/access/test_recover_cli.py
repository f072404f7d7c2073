"""The whole disaster: deposit, grant, the database lost, `escrow recover` from the bucket and
the master key, then a new grant fetches byte-exact and the audit log still verifies."""

from __future__ import annotations

import os

import pytest
from access_support import person_token
from live import start_broker

from broker import age


@pytest.fixture
def broker(tmp_path, policy_dir):
    process = start_broker(tmp_path / "broker", {"ESCROW_POLICY_DIR": str(policy_dir),
                                                 "ESCROW_CHECKPOINT_INTERVAL_S": "1"})
    yield process
    process.stop()


def granted(broker, tmp_path, target: str, name: str) -> tuple[list[str], str]:
    """A new researcher, with a key, the NDA signed and an approved grant for `target`."""
    rosa = ["--token", person_token(broker, f"{name}@uni.example")]
    rita = ["--token", person_token(broker, f"rita-{name}@acme.example",
                                    (("acme-ai", "reviewer"),))]
    identity = tmp_path / f"{name}.key"
    identity.write_text(age.generate_x25519_identity().encode() + "\n")
    broker.escrow("keys", "add", "--identity", str(identity), *rosa)
    broker.escrow("nda", "sign", "acme-research-nda", "--name", name, "--yes", *rosa)
    request = broker.last_json(broker.escrow("request", target, "--purpose", "study", "--json",
                                             *rosa))["request"]["id"]
    broker.escrow("review", "approve", request, *rita)
    return rosa, str(identity)


def test_deposit_grant_lose_the_database_recover_fetch_and_verify(broker, tmp_path):
    model = tmp_path / "gpt-small"
    model.mkdir()
    weights = os.urandom(300_000)
    (model / "model.safetensors").write_bytes(weights)
    broker.escrow("deposit", str(model), "--model", "acme-ai/gpt-small", "--version", "2024-05")
    target = "acme-ai/gpt-small@2024-05"
    rosa, identity = granted(broker, tmp_path, target, "rosa")
    broker.escrow("fetch", target, "--identity", identity, "--out", str(tmp_path / "before"),
                  *rosa)
    saved = tmp_path / "cp.txt"
    saved.write_text(broker.escrow("audit", "checkpoint").stdout)  # mirrors the log as well

    broker.stop()
    (broker.data_dir / "escrow.db").unlink()  # the database is lost; bucket and key are not
    init = broker.escrow("init")
    assert "run `escrow recover`" in init.stdout
    result = broker.last_json(broker.escrow("recover", "--json"))
    assert result["ok"] and len(result["deposits"]) == 1
    assert "grants" in " ".join(result["not_recovered"])
    broker.start()

    again, identity = granted(broker, tmp_path, target, "ada")
    out = tmp_path / "after"
    broker.escrow("fetch", target, "--identity", identity, "--out", str(out), *again)
    assert (out / "model.safetensors").read_bytes() == weights
    verified = broker.last_json(broker.escrow("audit", "verify", "--since", str(saved), "--json"))
    assert verified["ok"] and verified["size"] > verified["since"]
    rosa_old_token = broker.escrow("grants", *rosa, check=False)
    assert rosa_old_token.returncode != 0  # tokens were not in the bucket
