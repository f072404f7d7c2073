"""Grant close-out (attested deletion, with and without an SSH signature, overdue close-outs and
the policy rule that waits for them, with a clock that moves) and version quarantine (releases
and requests stop at once, lift restores them, both on the log, operators only), through the
API, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from access_support import proven_ssh_key, set_grant, stored_grant

from broker.services import closeouts

QUARANTINE = "/api/v1/quarantine/acme-ai/gpt-small/2024-05"

STRICT_POLICY = """\
organisation: acme-ai
models: ["acme-ai/strict-*"]
nda: {id: acme-research-nda, min_version: 1}
approvals: {auto: true}
grant: {default_days: 7, max_days: 10, releases_per_file: 1}
requires: {no_overdue_closeouts: true, overdue_after_days: 14}
"""


@pytest.fixture
def granted(sealed, researcher, reviewer) -> dict:
    request_id = researcher.ask().json["request"]["id"]
    decided = reviewer.post(f"/api/v1/requests/{request_id}/approve")
    assert decided.status_code == 200, decided.json
    return decided.json["grant"]


def end(escrow, grant_id: str, days_ago: float = 0) -> None:
    """The grant expired `days_ago` days ago (what the clock would do)."""
    moment = datetime.now(UTC) - timedelta(days=days_ago, seconds=1)
    set_grant(escrow, grant_id, not_before=moment - timedelta(days=7), expires_at=moment)


def close(actor, grant_id: str, **body):
    return actor.post(f"/api/v1/grants/{grant_id}/closeout",
                      {"attest_deleted": True, "typed_name": "Rosa Example", **body})


# --- close-out ------------------------------------------------------------------------------


def test_a_grant_cannot_be_closed_out_before_it_ended(granted, researcher, events):
    refused = close(researcher, granted["id"])
    assert refused.status_code == 409, refused.json
    assert "has not ended" in refused.json["detail"]
    assert events("grant.closed") == []


def test_the_close_out_is_attested_once_and_logged_without_the_name(escrow, granted, researcher,
                                                                    events):
    end(escrow, granted["id"])
    assert close(researcher, granted["id"], attest_deleted=False).status_code == 422
    made = close(researcher, granted["id"])
    assert made.status_code == 201, made.json
    assert made.json["attested_at"] and made.json["ssh_key"] is None
    assert f"grant: {granted['id']}" in made.json["message"]
    again = close(researcher, granted["id"])
    assert again.status_code == 200 and again.json["attested_at"] == made.json["attested_at"]
    logged = events("grant.closed")
    assert len(logged) == 1
    assert logged[0]["subject"]["grant"] == granted["id"]
    assert "Rosa" not in str(logged[0])  # the typed name stays off the log
    listed = researcher.get("/api/v1/grants").json["grants"][0]["closeout"]
    assert listed["attested_at"] == made.json["attested_at"] and not listed["overdue"]


def test_someone_else_cannot_close_out_the_grant(escrow, granted, person):
    end(escrow, granted["id"])
    other = person("mallory@uni.example")
    assert close(other, granted["id"]).status_code == 404


@pytest.fixture
def ssh_key(tmp_path, require_part):
    require_part(shutil.which("ssh-keygen") is not None, "ssh-keygen (OpenSSH)")
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def prove_ssh_key(escrow, actor, key: Path) -> str:
    return proven_ssh_key(escrow, actor.user_id, key)


def ssh_sign(key: Path, data: bytes, namespace: str = "escrow-closeout") -> str:
    message = key.parent / f"closeout-message-{namespace}"
    message.write_bytes(data)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(key),
                    str(message)], check=True, capture_output=True)
    return Path(f"{message}.sig").read_text()


def test_the_close_out_signed_with_a_proven_ssh_key(escrow, granted, researcher, reviewer,
                                                    ssh_key, events):
    key_id = prove_ssh_key(escrow, researcher, ssh_key)
    assert reviewer.post(f"/api/v1/grants/{granted['id']}/revoke").status_code == 200
    shown = researcher.get(f"/api/v1/grants/{granted['id']}/closeout").json
    assert shown["ended_at"] and shown["attested_at"] is None
    wrong = close(researcher, granted["id"],
                  ssh_signature=ssh_sign(ssh_key, shown["message"].encode(), "escrow-nda"))
    assert wrong.status_code == 422 and events("grant.closed") == []
    signed = close(researcher, granted["id"],
                   ssh_signature=ssh_sign(ssh_key, shown["message"].encode()))
    assert signed.status_code == 201, signed.json
    assert signed.json["ssh_key"] == key_id and "SSH SIGNATURE" in signed.json["ssh_signature"]
    logged = events("grant.closed")[0]["details"]
    assert logged["ssh_key"] == key_id and logged["ssh_key_fingerprint"].startswith("SHA256:")


# --- overdue close-outs ---------------------------------------------------------------------


def test_reviewers_see_an_overdue_close_out_as_the_clock_moves(escrow, granted, reviewer):
    end(escrow, granted["id"], days_ago=13)
    listed = reviewer.get("/api/v1/grants?org=acme-ai").json["grants"][0]["closeout"]
    assert listed["due_since"] and not listed["overdue"]
    grant = stored_grant(escrow, granted["id"])
    later = grant.expires_at + timedelta(days=14)
    with escrow.uow() as uow:
        (view,) = closeouts.with_closeouts(uow, [uow.session.get(type(grant), grant.id)], 14,
                                           later)
    assert view["closeout"]["overdue"] is True
    end(escrow, granted["id"], days_ago=15)
    listed = reviewer.get("/api/v1/grants?org=acme-ai").json["grants"][0]["closeout"]
    assert listed["overdue"] is True


def test_the_policy_refuses_a_new_grant_while_a_close_out_is_overdue(
    escrow, lab, granted, researcher, policy_dir
):
    (policy_dir / "acme-ai-strict.yaml").write_text(STRICT_POLICY)
    lab.deposit({"w.bin": b"strict" * 100}, model="acme-ai/strict-one", version="1")
    end(escrow, granted["id"], days_ago=10)  # due, not yet overdue
    first = researcher.ask("acme-ai/strict-one", "1")
    assert first.status_code == 201 and first.json["request"]["state"] == "approved", first.json
    # the clock moves past the policy's 14 days: the next request is refused
    end(escrow, granted["id"], days_ago=15)
    refused = researcher.ask("acme-ai/strict-one", "1")
    assert refused.status_code == 422, refused.json
    assert refused.json["decision"]["missing"] == ["a close-out of every grant that ended"]
    assert "escrow grants close" in refused.json["decision"]["reasons"][0]
    # closed out: the rule is met again
    assert close(researcher, granted["id"]).status_code == 201
    with escrow.uow() as uow:
        assert closeouts.due_closeouts(uow, int(researcher.user_id), datetime.now(UTC)) == ()
    again = researcher.ask("acme-ai/strict-one", "1")
    assert again.status_code == 201 and again.json["request"]["state"] == "approved", again.json


# --- quarantine -----------------------------------------------------------------------------


@pytest.fixture
def operator(make_person, client):
    made = make_person("olga@escrow.example", global_roles=("operator",))
    return {"Authorization": f"Bearer {made.token}"}


def test_quarantine_refuses_a_release_at_once_and_lift_restores_it(
    client, lab, granted, researcher, operator, events
):
    release = f"/api/v1/grants/{granted['id']}/files/0/release"
    quarantined = client.post(QUARANTINE, json={"reason": "leak report 42"}, headers=operator)
    assert quarantined.status_code == 200, quarantined.json
    assert quarantined.json["quarantined"] and quarantined.json["changed"]
    refused = researcher.post(release)
    assert refused.status_code == 403
    assert "quarantined" in refused.json["detail"] and "leak report 42" in refused.json["detail"]
    assert "escrow admin version lift" in refused.json["hint"]
    assert events("key.release_refused")[-1]["details"]["reason"] == "quarantined"
    # new requests are refused too, and nothing is recorded
    asked = researcher.ask()
    assert asked.status_code == 409 and "quarantined" in asked.json["detail"]
    again = client.post(QUARANTINE, json={"reason": "again"}, headers=operator)
    assert again.status_code == 200 and not again.json["changed"]
    assert again.json["reason"] == "leak report 42"
    deposit = client.get(f"/api/v1/deposits/{granted['deposit_id']}", headers=lab.auth)
    assert deposit.status_code == 200 and deposit.json["quarantined_at"]
    assert deposit.json["quarantine_reason"] == "leak report 42"
    lifted = client.delete(QUARANTINE, headers=operator)
    assert lifted.status_code == 200 and not lifted.json["quarantined"] and lifted.json["changed"]
    assert client.delete(QUARANTINE, headers=operator).json["changed"] is False
    assert researcher.post(release).status_code == 200
    assert [e["details"]["reason"] for e in events("version.quarantined")] == ["leak report 42"]
    assert len(events("version.quarantine_lifted")) == 1


def test_only_operators_quarantine(client, granted, reviewer, person):
    lab_admin = person("ada@acme.example", (("acme-ai", "admin"),))
    for actor in (reviewer, lab_admin):
        refused = actor.post(QUARANTINE, {"reason": "mine"})
        assert refused.status_code == 403, refused.json
        assert client.delete(QUARANTINE, headers=actor.auth).status_code == 403
    assert client.post(QUARANTINE, json={"reason": "x"}).status_code == 401


def test_a_quarantined_version_says_so_on_its_public_pages(client, sealed, person, operator):
    from test_agreements import AGREEMENT

    admin = person("ada@acme.example", (("acme-ai", "admin"),))
    page = "/agreements/acme-ai/gpt-small/2024-05"
    assert admin.client.put(page.replace("/agreements", "/api/v1/agreements"),
                            json={"text": AGREEMENT}, headers=admin.auth).status_code == 200
    assert client.post(QUARANTINE, json={"reason": "leak report 42"},
                       headers=operator).status_code == 200
    rosa = person("rosa@uni.example")

    for viewer in ({}, rosa.auth):  # the public, and a researcher: the fact, not the reason
        home = client.get("/", headers=viewer).get_data(as_text=True)
        assert "quarantined</span> since" in home and "until an operator lifts it" in home
        assert "leak report 42" not in home
        assert 'href="/request/acme-ai/gpt-small/2024-05"' not in home
        shown = client.get(page, headers=viewer).get_data(as_text=True)
        assert "an operator stopped this version's key releases" in shown
        assert "leak report 42" not in shown
    for viewer in (admin.auth, operator):  # the lab and the operators: the reason too
        home = client.get("/", headers=viewer).get_data(as_text=True)
        assert "(reason: leak report 42)" in home
        shown = client.get(page, headers=viewer).get_data(as_text=True)
        assert "(reason: leak report 42)" in shown

    (model,) = client.get("/api/v1/models").json["models"]
    assert model["versions"][0]["quarantined_at"]
    agreement = client.get("/api/v1/agreements/acme-ai/gpt-small/2024-05").json
    assert agreement["quarantined_at"] and "leak report" not in str(agreement)

    assert client.delete(QUARANTINE, headers=operator).status_code == 200
    home = client.get("/").get_data(as_text=True)
    assert "quarantined</span>" not in home
    assert 'href="/request/acme-ai/gpt-small/2024-05"' in home
    assert client.get("/api/v1/agreements/acme-ai/gpt-small/2024-05").json[
        "quarantined_at"] is None
    assert "quarantined" not in client.get(page).get_data(as_text=True)
