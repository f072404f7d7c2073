"""`escrow grants close` and `escrow admin version quarantine|lift` against a real broker
process, as people run them: what they print, their --json, and their refusals."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from access_support import person_token
from live import start_broker

from broker import age

TARGET = "acme-ai/gpt-small@2024-05"


@pytest.fixture
def broker(tmp_path, policy_dir):
    process = start_broker(tmp_path / "broker", {"ESCROW_POLICY_DIR": str(policy_dir)})
    yield process
    process.stop()


@pytest.fixture
def rosa(broker, tmp_path) -> list[str]:
    """A researcher with a proven key and the NDA signed: her --token."""
    token = ["--token", person_token(broker, "rosa@uni.example")]
    identity = tmp_path / "key.txt"
    identity.write_text(age.generate_x25519_identity().encode() + "\n")
    broker.escrow("keys", "add", "--identity", str(identity), *token)
    broker.escrow("nda", "sign", "acme-research-nda", "--name", "Rosa Example", "--yes", *token)
    return token


@pytest.fixture
def rita(broker) -> list[str]:
    return ["--token", person_token(broker, "rita@acme.example", (("acme-ai", "reviewer"),))]


@pytest.fixture
def grant_id(broker, tmp_path, rosa, rita) -> str:
    """A grant of rosa's on acme-ai/gpt-small@2024-05, approved by rita."""
    model = tmp_path / "gpt-small"
    model.mkdir()
    (model / "model.safetensors").write_bytes(os.urandom(20_000))
    broker.escrow("deposit", str(model), "--model", "acme-ai/gpt-small", "--version", "2024-05")
    asked = broker.last_json(broker.escrow("request", TARGET, "--purpose", "study", "--json",
                                           *rosa))
    approved = broker.last_json(broker.escrow("review", "approve", asked["request"]["id"],
                                              "--json", *rita))
    return approved["grant"]["id"]


def test_grants_close(broker, grant_id, rosa, rita, tmp_path, require_part):
    early = broker.escrow("grants", "close", grant_id, "--attest-deleted", "--name",
                          "Rosa Example", *rosa, check=False)
    assert early.returncode == 1 and "has not ended" in early.stderr
    no_flag = broker.escrow("grants", "close", grant_id, "--name", "Rosa Example", *rosa,
                            check=False)
    assert no_flag.returncode == 2 and "--attest-deleted" in no_flag.stderr

    broker.escrow("review", "revoke", grant_id, *rita)
    mallory = ["--token", person_token(broker, "mallory@evil.example")]
    theirs = broker.escrow("grants", "close", grant_id, "--attest-deleted", "--name", "M",
                           *mallory, check=False)
    assert theirs.returncode == 1
    assert f"grant {grant_id!r} does not exist or is not yours" in theirs.stderr

    require_part(shutil.which("ssh-keygen") is not None, "ssh-keygen (OpenSSH)")
    unproven = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(unproven)],
                   check=True)
    unsigned = broker.escrow("grants", "close", grant_id, "--attest-deleted", "--name",
                             "Rosa Example", "--ssh-key", str(unproven), *rosa, check=False)
    assert unsigned.returncode == 1
    assert "which is not a proven ssh-ed25519 key of yours" in unsigned.stderr
    [listed] = broker.last_json(broker.escrow("grants", "--json", *rosa))["grants"]
    assert listed["closeout"]["attested_at"] is None  # the refusals recorded nothing

    broker.escrow("keys", "add", "--identity", str(unproven), *rosa)  # proven now
    closed = broker.escrow("grants", "close", grant_id, "--attest-deleted", "--name",
                           "Rosa Example", "--ssh-key", str(unproven), *rosa)
    assert f"grant {grant_id} closed out at " in closed.stdout
    assert "ssh signature by key " in closed.stdout
    again = broker.last_json(broker.escrow("grants", "close", grant_id, "--attest-deleted",
                                           "--name", "Rosa Example", "--json", *rosa))
    assert again["grant_id"] == grant_id and again["ssh_key"] is not None
    assert "SSH SIGNATURE" in again["ssh_signature"]
    assert again["ssh_key_fingerprint"].startswith("SHA256:")
    assert again["attested_at"] in closed.stdout  # made once: the same attestation
    assert f"grant: {grant_id}" in again["message"]
    listed = broker.escrow("grants", *rosa).stdout
    assert f"closed out {again['attested_at']}" in listed


def test_admin_version_quarantine_and_lift(broker, grant_id, rosa):
    made = broker.escrow("admin", "version", "quarantine", TARGET, "--reason", "leak report 42")
    assert f"{TARGET} is quarantined since " in made.stdout
    assert "(leak report 42)" in made.stdout
    again = broker.last_json(broker.escrow("admin", "version", "quarantine", TARGET,
                                           "--reason", "another", "--json"))
    assert again["quarantined"] and again["changed"] is False
    assert again["reason"] == "leak report 42" and again["model"] == "acme-ai/gpt-small"
    repeated = broker.escrow("admin", "version", "quarantine", TARGET, "--reason", "another")
    assert "(already so: nothing changed)" in repeated.stdout

    asked = broker.escrow("request", TARGET, "--purpose", "study", *rosa, check=False)
    assert asked.returncode == 1 and "is quarantined since" in asked.stderr
    assert "escrow admin version lift" in asked.stderr

    blank = broker.escrow("admin", "version", "quarantine", TARGET, "--reason", " ",
                          check=False)
    assert blank.returncode == 1 and "'reason' is missing" in blank.stderr
    no_reason = broker.escrow("admin", "version", "quarantine", TARGET, check=False)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    unknown = broker.escrow("admin", "version", "lift", "acme-ai/gpt-small@1999", check=False)
    assert unknown.returncode == 1 and "version 1999 of acme-ai/gpt-small does not exist" in \
        unknown.stderr

    lifted = broker.escrow("admin", "version", "lift", TARGET)
    assert f"{TARGET} is not quarantined: key releases and requests are allowed" in \
        lifted.stdout
    lifted_again = broker.last_json(broker.escrow("admin", "version", "lift", TARGET, "--json"))
    assert lifted_again["quarantined"] is False and lifted_again["changed"] is False
    assert lifted_again["reason"] is None
    assert broker.escrow("request", TARGET, "--purpose", "again", *rosa).returncode == 0
