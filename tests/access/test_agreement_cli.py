"""`escrow deposit --agreement`, `escrow agreement …` against a real broker process."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from access_support import person_token
from live import start_broker

AGREEMENT = """\
model: acme-ai/gpt-small
trustees: [tina@trust.example, tom@trust.example, tess@trust.example]
triggers:
  - name: board
    when: {any_of: [{trustee_vote: {count: 2}}, {lab_silence: {days: 90}}]}
    unlocks: public
"""


@pytest.fixture
def broker(tmp_path, policy_dir):
    process = start_broker(tmp_path / "broker", {"ESCROW_POLICY_DIR": str(policy_dir)})
    yield process
    process.stop()


def test_attach_with_the_deposit_show_vote_and_refuse_a_weaker_one(broker, tmp_path,
                                                                   require_part):
    require_part(shutil.which("ssh-keygen") is not None, "ssh-keygen (OpenSSH)")
    model = tmp_path / "gpt-small"
    model.mkdir()
    (model / "model.safetensors").write_bytes(os.urandom(20_000))
    agreement = tmp_path / "agreement.yaml"
    agreement.write_text(AGREEMENT)
    deposited = broker.escrow("deposit", str(model), "--model", "acme-ai/gpt-small",
                              "--version", "2024-05", "--agreement", str(agreement), "--json")
    assert broker.last_json(deposited)["state"] == "sealed"
    assert "release agreement attached" in deposited.stderr
    target = "acme-ai/gpt-small@2024-05"

    shown = broker.escrow("agreement", "show", target)
    assert "acme-ai/gpt-small@2024-05: sealed" in shown.stdout
    assert "board: when (2 trustee votes OR the lab silent for 90 days), anyone logged in may " \
           "fetch it, without review" in shown.stdout
    assert "last check-in: never" in shown.stdout
    assert "trigger board: still missing one of: 2 more trustee votes (of tina@trust.example, " \
           "tom@trust.example, tess@trust.example) | the lab silent for 90 days" in shown.stdout

    ada = ["--token", person_token(broker, "ada@acme.example", (("acme-ai", "admin"),))]
    checked = broker.escrow("agreement", "checkin", "acme-ai", *ada)
    assert "acme-ai checked in at" in checked.stdout

    weaker = tmp_path / "weaker.yaml"
    weaker.write_text(AGREEMENT.replace("days: 90", "days: 9000"))
    refused = broker.escrow("agreement", "attach", target, str(weaker), *ada, check=False)
    assert refused.returncode == 1 and "amendment rule is not met" in refused.stderr
    removed = broker.escrow("agreement", "remove", target, *ada, check=False)
    assert removed.returncode == 1 and "never removed" in removed.stderr

    for name in ("tina", "tom"):
        key = tmp_path / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
        token = ["--token", person_token(broker, f"{name}@trust.example")]
        broker.escrow("keys", "add", "--identity", str(key), *token)
        voted = broker.escrow("agreement", "vote", target, "--ssh-key", str(key), *token)
        assert "you voted" in voted.stdout
    state = broker.last_json(broker.escrow("agreement", "show", target, "--json"))
    assert state["state"] == "released: board"
    assert [v["trustee"] for v in state["votes"]] == ["tina@trust.example", "tom@trust.example"]
    assert state["last_checkin"] is not None
    shown = broker.escrow("agreement", "show", target).stdout
    assert f"{target}: released: board" in shown and "trigger board: met" in shown
    assert "vote: tina@trust.example for release at " in shown
    assert f"last check-in: {state['last_checkin']}" in shown
    # a trustee's login attaches an amendment too; the default rule still wants the lab's admin
    tina = ["--token", person_token(broker, "tina@trust.example")]
    proposed = broker.escrow("agreement", "attach", target, str(weaker), *tina, check=False)
    assert proposed.returncode == 1 and "the lab's admin proposing it" in proposed.stderr

    # a version deposited without one: its lab's admin attaches it later
    broker.escrow("deposit", str(model), "--model", "acme-ai/gpt-small", "--version", "2024-06")
    later = broker.escrow("agreement", "attach", "acme-ai/gpt-small@2024-06", str(agreement),
                          *ada)
    assert "release agreement attached (sha256 " in later.stdout
    assert "acme-ai/gpt-small@2024-06: sealed" in later.stdout


def test_vote_by_age_challenge_with_an_identity_file(broker, tmp_path):
    model = tmp_path / "gpt-small"
    model.mkdir()
    (model / "model.safetensors").write_bytes(os.urandom(20_000))
    agreement = tmp_path / "agreement.yaml"
    agreement.write_text(AGREEMENT)
    broker.escrow("deposit", str(model), "--model", "acme-ai/gpt-small", "--version", "2024-05",
                  "--agreement", str(agreement))
    target = "acme-ai/gpt-small@2024-05"
    tokens = {}
    for name in ("tina", "tom"):
        key = tmp_path / f"{name}.txt"
        broker.escrow("keys", "generate", "--x25519", "-o", str(key))
        tokens[name] = ["--token", person_token(broker, f"{name}@trust.example")]
        broker.escrow("keys", "add", "--identity", str(key), *tokens[name])
    both = broker.escrow("agreement", "vote", target, "--identity", str(tmp_path / "tina.txt"),
                         "--ssh-key", str(agreement), *tokens["tina"], check=False)
    assert both.returncode != 0 and "one of them" in both.stderr
    voted = broker.escrow("agreement", "vote", target, "--identity", str(tmp_path / "tina.txt"),
                          *tokens["tina"])
    assert f"you voted; {target} is sealed" in voted.stdout
    withdrawn = broker.escrow("agreement", "vote", target, "--withdraw", *tokens["tina"])
    assert f"vote withdrawn; {target} is sealed" in withdrawn.stdout
    # tom's key is not tina's: the challenge is encrypted to a key of the one who asks
    wrong = broker.escrow("agreement", "vote", target, "--identity", str(tmp_path / "tina.txt"),
                          *tokens["tom"], check=False)
    assert wrong.returncode == 1 and "is not a proven key of yours" in wrong.stderr
    for name in ("tom", "tina"):
        made = broker.escrow("agreement", "vote", target, "--identity",
                             str(tmp_path / f"{name}.txt"), *tokens[name], "--json")
        shown = broker.last_json(made)
        assert shown["created"] and shown["vote"]["proof"] == "age-challenge"
    assert shown["agreement"]["state"] == "released: board"
    # a quarantine holds back even a released version, and `show` says so
    broker.escrow("admin", "version", "quarantine", target, "--reason", "leak report 42")
    shown = broker.escrow("agreement", "show", target).stdout
    assert f"{target}: released: board" in shown
    assert "until an operator lifts it" in shown and "leak report" not in shown
