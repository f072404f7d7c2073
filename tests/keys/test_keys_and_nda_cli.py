"""`escrow keys` and `escrow nda` against a real broker process, as a researcher runs them."""

import hashlib
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from live import ESCROW_BIN, start_broker

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A broker serving the shipped NDA texts, and a researcher's fresh login token."""
    from broker.config import load_settings
    from broker.container import build_escrow
    from broker.services import people, sessions

    base = tmp_path_factory.mktemp("cli-broker")
    process = start_broker(base, {"ESCROW_POLICY_DIR": str(REPO_POLICIES)})
    escrow = build_escrow(load_settings(process.env))
    with escrow.uow() as uow:
        user = people.upsert_user(uow, None, "https://idp.uni.example", "ada", people.Claims(
            email="ada@uni.example", email_verified=True, name="Ada Lovelace"))
        session = sessions.start_session(uow, user, "device", user.issuer, datetime.now(UTC))
        process.env["ESCROW_TOKEN"] = sessions.issue_tokens(uow, session).access_token
        uow.commit()
    escrow.engine.dispose()
    yield process
    process.stop()


def run(broker, *args, stdin=b""):
    """An `escrow` command; stdin is never the terminal (no command may wait on it)."""
    return subprocess.run([ESCROW_BIN, *args], env=broker.env, capture_output=True, timeout=120,
                          input=stdin, check=False)


def last_json(result):
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def test_keys_add_prove_retire_and_list(broker, tmp_path, require_part):
    require_part(shutil.which("age-keygen") is not None, "the Debian age tool")
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    for identity in (first, second):
        subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)

    # register and prove in one go, with our own age code
    added = last_json(run(broker, "keys", "add", "--identity", str(first), "--label", "laptop",
                          "--json"))
    assert (added["state"], added["type"], added["label"]) == ("proven", "x25519", "laptop")

    # or register a public key and prove it with the plain age tool
    recipient = subprocess.run(["age-keygen", "-y", str(second)], check=True,
                               capture_output=True, text=True).stdout.strip()
    pending = last_json(run(broker, "keys", "add", recipient, "--json"))
    assert pending["state"] == "pending"
    challenge = run(broker, "keys", "challenge", pending["id"])
    assert challenge.stdout.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    decrypted = subprocess.run(["age", "-d", "-i", str(second)], input=challenge.stdout,
                               check=True, capture_output=True).stdout
    proven = last_json(run(broker, "keys", "prove", pending["id"], "--response", "-",
                           "--json", stdin=decrypted))
    assert proven["state"] == "proven"

    retired = last_json(run(broker, "keys", "retire", added["id"], "--json"))
    assert retired["state"] == "retired"
    listed = run(broker, "keys", "list").stdout.decode()
    assert f"{added['id']}  retired" in listed and f"{pending['id']}  proven" in listed


def test_nda_show_and_sign_with_an_ssh_signature(broker, tmp_path, require_part):
    require_part(shutil.which("ssh-keygen") is not None, "ssh-keygen (OpenSSH)")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    last_json(run(broker, "keys", "add", "--identity", str(key), "--json"))
    raw = (REPO_POLICIES / "ndas" / "acme-research-nda-v1.md").read_bytes()

    listed = last_json(run(broker, "nda", "list", "--json"))
    assert [(n["id"], n["versions"][-1]["signed"]) for n in listed["ndas"]] == [
        ("acme-research-nda", False)]
    shown = run(broker, "nda", "show", "acme-research-nda")
    assert shown.returncode == 0 and shown.stdout == raw

    signed = last_json(run(broker, "nda", "sign", "acme-research-nda", "--name", "Ada Lovelace",
                           "--ssh-key", str(key), "--json"))
    assert signed["created"] is True
    assert signed["sha256"] == hashlib.sha256(raw).hexdigest()
    assert signed["ssh_key"] and "BEGIN SSH SIGNATURE" in signed["ssh_signature"]

    again = run(broker, "nda", "sign", "acme-research-nda", "--name", "Ada Lovelace")
    assert again.returncode == 0 and b"had already signed" in again.stdout
