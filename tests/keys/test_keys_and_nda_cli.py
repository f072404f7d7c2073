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


# --- escrow keys generate -----------------------------------------------------------------------


def test_keys_generate_makes_a_post_quantum_key_by_default_that_registers(broker, tmp_path):
    from broker import age

    env = {**broker.env, "ESCROW_CONFIG_DIR": str(tmp_path / "config")}
    made = subprocess.run([ESCROW_BIN, "keys", "generate", "--json"], env=env,
                          capture_output=True, timeout=60, check=False)
    key = last_json(made)
    path = tmp_path / "config" / "key.txt"  # the README's ~/.config/escrow/key.txt
    assert (key["type"], key["path"]) == ("post-quantum", str(path))
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert f"# public key: {key['recipient']}\n" in text
    identity = age.parse_identities(text)[0]
    assert isinstance(identity, age.HybridIdentity)
    assert identity.to_recipient().encode() == key["recipient"].strip()
    assert key["recipient"].startswith("age1pq1")
    assert identity.encode() not in made.stdout.decode() + made.stderr.decode()

    # never replaces a key: the second run fails and leaves the file as it was
    again = subprocess.run([ESCROW_BIN, "keys", "generate"], env=env, capture_output=True,
                           timeout=60, check=False)
    assert again.returncode != 0 and b"exists already" in again.stderr
    assert path.read_text() == text

    # the policy's post-quantum requirement is met by it, once registered and proven
    added = last_json(run(broker, "keys", "add", "--identity", str(path), "--json"))
    assert added["state"] == "proven"
    assert added["type"] == "mlkem768x25519"


def test_keys_generate_x25519_and_ssh_keys_work_with_the_plain_tools(broker, tmp_path,
                                                                       require_part):
    require_part(shutil.which("age") is not None, "the Debian age tool")
    require_part(shutil.which("ssh-keygen") is not None, "ssh-keygen (OpenSSH)")
    classical = tmp_path / "x25519.txt"
    made = last_json(run(broker, "keys", "generate", "--x25519", "-o", str(classical), "--json"))
    assert made["recipient"].startswith("age1") and classical.stat().st_mode & 0o777 == 0o600
    assert subprocess.run(["age-keygen", "-y", str(classical)], check=True, capture_output=True,
                          text=True).stdout.strip() == made["recipient"]
    sealed = subprocess.run(["age", "-r", made["recipient"]], input=b"weights", check=True,
                            capture_output=True).stdout
    assert subprocess.run(["age", "-d", "-i", str(classical)], input=sealed, check=True,
                          capture_output=True).stdout == b"weights"

    ssh = tmp_path / "id_escrow"
    made = last_json(run(broker, "keys", "generate", "--ssh", "-o", str(ssh), "--json"))
    assert made["files"] == [str(ssh), f"{ssh}.pub"]
    assert ssh.stat().st_mode & 0o777 == 0o600
    public = subprocess.run(["ssh-keygen", "-y", "-f", str(ssh)], check=True, capture_output=True,
                            text=True).stdout.split()[:2]
    assert (tmp_path / "id_escrow.pub").read_text().split()[:2] == public == \
        made["recipient"].split()[:2]
    sealed = subprocess.run(["age", "-R", f"{ssh}.pub"], input=b"weights", check=True,
                            capture_output=True).stdout
    assert subprocess.run(["age", "-d", "-i", str(ssh)], input=sealed, check=True,
                          capture_output=True).stdout == b"weights"
    added = last_json(run(broker, "keys", "add", "--identity", str(ssh), "--json"))
    assert (added["state"], added["type"]) == ("proven", "ssh-ed25519")
