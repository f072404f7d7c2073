"""Release agreements that bind, through the API, on SQLite and PostgreSQL: attach, the seal,
amendments only as the agreement's rule allows (other changes refused and logged), trustees'
signed votes after a fresh login (withdrawn before and after the quorum), the lab's check-ins and
early release, time-based triggers fired by the worker's step with a clock that moves, and
requests decided under what the release unlocked."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from access_support import WEIGHTS, mirror_whole_log, proven_ssh_key

from broker.services import agreements

PATH = "/api/v1/agreements/acme-ai/gpt-small/2024-05"
TRUSTEES = ("tina@trust.example", "tom@trust.example", "tess@trust.example")

AGREEMENT = """\
model: acme-ai/gpt-small
trustees: [tina@trust.example, tom@trust.example, tess@trust.example]
triggers:
  - name: board
    when: {trustee_vote: {count: 2}}
    unlocks: public
  - name: lab-gone
    when: {lab_silence: {days: 30}}
    unlocks: acme-ai-auto
"""
WEAKER = AGREEMENT.replace("{count: 2}", "{count: 3}")


@pytest.fixture
def ssh_key(tmp_path, require_part):
    require_part(shutil.which("ssh-keygen") is not None, "ssh-keygen (OpenSSH)")

    def make(name: str) -> Path:
        path = tmp_path / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                       check=True)
        return path

    return make


def ssh_sign(key: Path, data: bytes) -> str:
    message = key.parent / f"{key.name}-message"
    message.write_bytes(data)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "escrow-agreement", "-f", str(key),
                    str(message)], check=True, capture_output=True)
    return Path(f"{message}.sig").read_text()


@pytest.fixture
def trustee(escrow, person, ssh_key):
    """trustee(email) -> (Actor, private key): logged in just now, with a proven ssh key."""

    def make(email: str):
        actor = person(email)
        key = ssh_key(email.split("@")[0])
        proven_ssh_key(escrow, actor.user_id, key)
        return actor, key

    return make


@pytest.fixture
def admin(person):
    return person("ada@acme.example", (("acme-ai", "admin"),))


@pytest.fixture
def attached(sealed, admin) -> dict:
    made = admin.client.put(PATH, json={"text": AGREEMENT}, headers=admin.auth)
    assert made.status_code == 200, made.json
    assert made.json["outcome"] == "attached"
    return made.json["agreement"]


def vote(actor, key, proposal: str | None = None):
    query = f"?proposal_sha256={proposal}" if proposal else ""
    message = actor.client.get(PATH + "/vote-message" + query).json["message"]
    body = {"ssh_signature": ssh_sign(key, message.encode())}
    if proposal:
        body["proposal_sha256"] = proposal
    return actor.post(PATH + "/votes", body)


def test_attached_with_the_deposit_its_text_and_hash_on_the_log_and_in_the_bucket(
    lab, escrow, client, events
):
    lab.deposit(WEIGHTS, seal=False)
    made = client.put(PATH, json={"text": AGREEMENT}, headers=lab.auth)  # the depositor
    assert made.status_code == 200, made.json
    sha = hashlib.sha256(AGREEMENT.encode()).hexdigest()
    assert made.json["agreement"]["sha256"] == sha
    assert made.json["agreement"]["state"].startswith("not sealed yet")
    # before the seal the lab may still replace it, freely
    again = client.put(PATH, json={"text": WEAKER}, headers=lab.auth)
    assert again.json["outcome"] == "replaced"
    logged = events("agreement.attached")
    assert [e["details"]["sha256"] for e in logged] == [
        sha, hashlib.sha256(WEAKER.encode()).hexdigest()]
    assert logged[0]["details"]["text"] == AGREEMENT
    deposit_id = made.json["agreement"]["deposit_id"]
    stored = escrow.store.get_bytes(f"deposits/{deposit_id}/agreements/000002.yaml")
    assert stored == WEAKER.encode()
    # and remove it before the seal: gone from the bucket too
    assert client.delete(PATH, headers=lab.auth).status_code == 200
    assert escrow.store.list_keys(f"deposits/{deposit_id}/agreements/") == []


def test_an_invalid_agreement_is_refused_with_its_line(sealed, admin):
    made = admin.client.put(PATH, json={"text": AGREEMENT.replace("days: 30", "days: -1")},
                            headers=admin.auth)
    assert made.status_code == 422
    assert "agreement.yaml:8: trigger lab-gone lab_silence days is -1" in made.json["detail"]
    other = admin.client.put(PATH, json={"text": AGREEMENT.replace("unlocks: acme-ai-auto",
                                                                   "unlocks: nowhere")},
                             headers=admin.auth)
    assert other.status_code == 404 and "policy 'nowhere' does not exist" in other.json["detail"]


def test_a_sealed_agreement_cannot_be_removed_or_weakened_and_the_attempts_are_logged(
    attached, admin, lab, person, client, events
):
    removed = client.delete(PATH, headers=admin.auth)
    assert removed.status_code == 409
    assert "is sealed under release agreement #1" in removed.json["detail"]
    assert "escrow agreement attach acme-ai/gpt-small@2024-05 FILE" in removed.json["hint"]
    weaker = client.put(PATH, json={"text": WEAKER}, headers=admin.auth)
    assert weaker.status_code == 409
    assert "amendment rule is not met: still missing 2 more trustee votes" in weaker.json["detail"]
    refused = events("agreement.change_refused")
    assert [e["details"]["attempt"] for e in refused] == ["remove", "amend"]
    assert refused[1]["details"]["proposal_sha256"] == hashlib.sha256(WEAKER.encode()).hexdigest()
    assert refused[0]["details"]["reason"] == "a sealed version's agreement is never removed"

    # members of the lab without the admin role (its depositor's token, a reviewer) no longer
    # may touch it at all once sealed: refused, naming who may, and logged all the same
    reviewer = person("rita@acme.example", (("acme-ai", "reviewer"),))
    for who, role in ((lab, "depositor"), (reviewer, "reviewer")):
        for attempt in ("amend", "remove"):
            answer = (client.put(PATH, json={"text": WEAKER}, headers=who.auth)
                      if attempt == "amend" else client.delete(PATH, headers=who.auth))
            assert answer.status_code == 403, answer.json
            assert f"the role {role} in 'acme-ai' may not change it" in answer.json["detail"]
            assert "the attempt is on the audit log" in answer.json["detail"]
            assert "only an admin of 'acme-ai', or a trustee the agreement names," in \
                answer.json["hint"]
            logged = events("agreement.change_refused")[-1]
            assert logged["details"]["attempt"] == attempt
            assert logged["details"]["roles"] == [role]
            assert logged["details"]["sha256"] == attached["sha256"]
            assert f"the role {role} in 'acme-ai' may not change it" in logged["details"]["reason"]
            assert logged["actor"]["kind"] == ("token" if who is lab else "user")
    assert len(events("agreement.change_refused")) == 6

    # someone with no role in the organisation: a plain 403, not logged (strangers cannot fill
    # the log), even an admin of another organisation
    for outsider in (person("eve@evil.example"),
                     person("olga@other.example", (("other-lab", "admin"),))):
        for answer in (client.put(PATH, json={"text": WEAKER}, headers=outsider.auth),
                       client.delete(PATH, headers=outsider.auth)):
            assert answer.status_code == 403
            assert "audit log" not in answer.json["detail"]
    assert len(events("agreement.change_refused")) == 6
    assert client.get(PATH).json["sha256"] == attached["sha256"]  # unchanged


def test_an_amendment_the_rule_allows_replaces_it(attached, admin, trustee, client, events):
    proposal = hashlib.sha256(WEAKER.encode()).hexdigest()
    for email in TRUSTEES[:2]:
        actor, key = trustee(email)
        voted = vote(actor, key, proposal)
        assert voted.status_code == 201, voted.json
    assert client.get(PATH).json["state"] == "sealed"  # amendment votes release nothing
    amended = client.put(PATH, json={"text": WEAKER}, headers=admin.auth)
    assert amended.status_code == 200, amended.json
    assert amended.json["outcome"] == "amended" and amended.json["agreement"]["number"] == 2
    logged = events("agreement.amended")
    assert logged[0]["details"]["replaces"]["sha256"] == attached["sha256"]


def test_trustee_votes_release_it_and_requests_are_granted_under_public(
    attached, trustee, person, researcher, events, make_person
):
    outsider, outsider_key = trustee("mallory@evil.example")
    refused = vote(outsider, outsider_key)
    assert refused.status_code == 403 and "not a trustee" in refused.json["detail"]
    stale = make_person("tom@trust.example", minutes_ago=30)  # a login too old to vote
    answer = researcher.client.post(PATH + "/votes", json={"ssh_signature": "x"},
                                    headers={"Authorization": f"Bearer {stale.token}"})
    assert answer.status_code == 401 and answer.json["title"] == "fresh login required"

    tina, tina_key = trustee("tina@trust.example")
    _, other_key = trustee("tess@trust.example")
    forged = vote(tina, other_key)  # signed with someone else's key
    assert forged.status_code == 422
    first = vote(tina, tina_key)
    assert first.status_code == 201 and first.json["agreement"]["state"] == "sealed"
    assert first.json["agreement"]["triggers"][0]["missing"] == [
        "1 more trustee vote (of tom@trust.example, tess@trust.example)"]
    assert vote(tina, tina_key).status_code == 200  # the same vote again: unchanged

    before = researcher.ask()  # not released yet: the lab's policy (NDA, review) decides
    assert before.json["request"]["state"] == "pending"

    tom, tom_key = trustee("tom@trust.example")
    second = vote(tom, tom_key)
    assert second.status_code == 201
    assert second.json["agreement"]["state"] == "released: board"
    fired = events("agreement.triggered")
    assert len(fired) == 1 and fired[0]["details"]["unlocks"] == "public"
    assert len(events("agreement.voted")) == 2

    # public: anyone logged in with a proven key gets a grant at once, no NDA, no review
    newcomer = person("nina@elsewhere.example")
    newcomer.add_key()
    granted = newcomer.ask()
    assert granted.status_code == 201, granted.json
    assert granted.json["request"]["state"] == "approved"
    assert granted.json["request"]["policy"]["id"] == "public" and granted.json["grant"]


def test_votes_withdrawn_before_the_quorum_and_not_after(attached, trustee, events):
    tina, tina_key = trustee("tina@trust.example")
    tom, tom_key = trustee("tom@trust.example")
    assert vote(tina, tina_key).status_code == 201
    withdrawn = tina.post(PATH + "/votes/withdraw")
    assert withdrawn.status_code == 200, withdrawn.json
    assert withdrawn.json["vote"]["withdrawn_at"]
    assert vote(tom, tom_key).json["agreement"]["state"] == "sealed"  # 1 vote counts, not 2
    assert vote(tina, tina_key).json["agreement"]["state"] == "released: board"
    late = tom.post(PATH + "/votes/withdraw")
    assert late.status_code == 409 and "the quorum was reached" in late.json["detail"]
    assert len(events("agreement.vote_withdrawn")) == 1
    assert events("agreement.change_refused")[-1]["details"]["attempt"] == "withdraw_vote"


def test_the_lab_silence_switch_with_a_clock_that_moves(attached, admin, escrow, researcher,
                                                       client, events):
    checked = admin.post("/api/v1/orgs/acme-ai/checkins")
    assert checked.status_code == 200, checked.json
    start = datetime.fromisoformat(checked.json["at"])
    assert agreements.fire_due(escrow, start + timedelta(days=29)) == []
    shown = client.get(PATH).json
    assert shown["last_checkin"] == checked.json["at"] and shown["state"] == "sealed"
    released = agreements.fire_due(escrow, start + timedelta(days=30, seconds=1))
    assert released == [attached["deposit_id"]]
    assert client.get(PATH).json["state"] == "released: lab-gone"
    fired = events("agreement.triggered")
    assert fired[0]["actor"] == {"kind": "system", "id": "worker"}
    assert agreements.fire_due(escrow, start + timedelta(days=60)) == []  # once
    # the lab cannot take it back: a check-in now changes nothing, and there is no undo route
    admin.post("/api/v1/orgs/acme-ai/checkins")
    assert client.get(PATH).json["state"] == "released: lab-gone"
    # requests are decided under the unlocked policy (acme-ai-auto: automatic, one release)
    granted = researcher.ask()
    assert granted.json["request"]["state"] == "approved"
    assert granted.json["request"]["policy"]["id"] == "acme-ai-auto"
    assert len(events("agreement.checkin")) == 2


def test_the_lab_releases_early(sealed, admin, client, events):
    text = AGREEMENT + "  - name: early\n    when: {lab_release: true}\n    unlocks: public\n"
    assert admin.client.put(PATH, json={"text": text}, headers=admin.auth).status_code == 200
    released = admin.post(PATH + "/release")
    assert released.status_code == 200, released.json
    assert released.json["state"] == "released: early"
    assert [e["action"] for e in (events("agreement.lab_released") + events(
        "agreement.triggered"))] == ["agreement.lab_released", "agreement.triggered"]


def test_a_date_trigger_fires_when_the_clock_reaches_it(sealed, admin, escrow, client, events):
    text = ("model: acme-ai/gpt-small\ntrustees: [tina@trust.example]\n"
            "triggers: [{name: sunset, when: {date: 2100-01-01}, unlocks: public}]\n")
    made = admin.client.put(PATH, json={"text": text}, headers=admin.auth)
    assert made.status_code == 200, made.json
    deposit_id = made.json["agreement"]["deposit_id"]
    eve = datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert agreements.fire_due(escrow, eve) == []  # the clock moves; nobody sleeps
    assert client.get(PATH).json["state"] == "sealed" and events("agreement.triggered") == []
    assert agreements.fire_due(escrow, datetime(2100, 1, 1, tzinfo=UTC)) == [deposit_id]
    assert client.get(PATH).json["state"] == "released: sunset"
    assert events("agreement.triggered")[0]["details"]["reasons"] == [
        "the date 2100-01-01 has come"]


BOTH = """\
model: acme-ai/gpt-small
trustees: [tina@trust.example, tom@trust.example, tess@trust.example]
triggers:
  - name: gone-and-voted
    when:
      all_of:
        - lab_silence: {days: 30}
        - trustee_vote: {count: 2}
    unlocks: acme-ai-auto
"""


def test_silence_and_votes_combined_need_both_as_the_clock_moves(sealed, admin, trustee, escrow,
                                                                  client, events):
    made = admin.client.put(PATH, json={"text": BOTH}, headers=admin.auth)
    assert made.status_code == 200, made.json
    deposit_id = made.json["agreement"]["deposit_id"]
    start = datetime.fromisoformat(admin.post("/api/v1/orgs/acme-ai/checkins").json["at"])
    # the lab silent long enough, but no trustee voted: the AND holds it back
    assert agreements.fire_due(escrow, start + timedelta(days=31)) == []
    # two votes, but the lab checked in just now: still sealed
    for email in TRUSTEES[:2]:
        voted = vote(*trustee(email))
        assert voted.status_code == 201, voted.json
        assert voted.json["agreement"]["state"] == "sealed"
    (missing,) = client.get(PATH).json["triggers"][0]["missing"]
    assert missing.startswith("the lab silent for 30 days")
    assert agreements.fire_due(escrow, start + timedelta(days=29)) == []
    # both: the clock reaches the silence with the votes in
    assert agreements.fire_due(escrow, start + timedelta(days=30, seconds=1)) == [deposit_id]
    assert client.get(PATH).json["state"] == "released: gone-and-voted"
    (fired,) = events("agreement.triggered")
    assert len(fired["details"]["reasons"]) == 2


def test_a_release_is_not_undone_even_by_an_amendment_the_lab_may_make_alone(
    sealed, admin, escrow, researcher, client, events
):
    lab_amends = AGREEMENT + "amendment: {lab_admin: true}\n"
    made = admin.client.put(PATH, json={"text": lab_amends}, headers=admin.auth)
    assert made.status_code == 200, made.json
    released = agreements.fire_due(escrow, datetime.now(UTC) + timedelta(days=31))
    assert released == [made.json["agreement"]["deposit_id"]]
    # the lab, alone, amends it to a trigger that can never have fired: the release stands
    never = ("model: acme-ai/gpt-small\ntrustees: [tina@trust.example]\n"
             "triggers: [{name: far, when: {date: 2999-01-01}, unlocks: public}]\n"
             "amendment: {lab_admin: true}\n")
    amended = admin.client.put(PATH, json={"text": never}, headers=admin.auth)
    assert amended.status_code == 200 and amended.json["outcome"] == "amended", amended.json
    shown = client.get(PATH).json
    assert shown["state"] == "released: lab-gone" and shown["release"]["unlocks"] == "acme-ai-auto"
    assert client.delete(PATH, headers=admin.auth).status_code == 409  # nor removed
    assert events("agreement.change_refused")[-1]["details"]["attempt"] == "remove"
    granted = researcher.ask()  # still decided under what the release unlocked
    assert granted.json["request"]["state"] == "approved", granted.json
    assert granted.json["request"]["policy"]["id"] == "acme-ai-auto"


def test_recovery_restores_agreements_and_the_release(attached, admin, escrow, trustee, fresh):
    from broker.services.recovery import recover

    amended = WEAKER
    proposal = hashlib.sha256(amended.encode()).hexdigest()
    for email in TRUSTEES[:2]:
        assert vote(*trustee(email), proposal).status_code == 201
    assert admin.client.put(PATH, json={"text": amended}, headers=admin.auth).status_code == 200
    admin.post(PATH + "/release")  # sets the lab's release; no trigger of WEAKER uses it
    released = agreements.fire_due(escrow, datetime.now(UTC) + timedelta(days=31))
    assert released == [attached["deposit_id"]]
    with escrow.uow() as uow:
        mirror_whole_log(escrow, uow)

    recover(fresh)
    app = __import__("broker").create_app(fresh.settings)
    shown = app.test_client().get(PATH).json
    assert shown["number"] == 2 and shown["sha256"] == proposal and shown["text"] == amended
    assert shown["state"] == "released: lab-gone"
    assert shown["release"]["unlocks"] == "acme-ai-auto"


def test_recovery_refuses_an_agreement_altered_in_the_bucket(attached, escrow, fresh):
    from broker.services.recovery import RecoveryFailed, recover

    key = f"deposits/{attached['deposit_id']}/agreements/000001.yaml"
    escrow.store.put_bytes(key, WEAKER.encode())
    with pytest.raises(RecoveryFailed, match="000001.yaml does not hash to the SHA-256"):
        recover(fresh)


def test_the_worker_fires_a_date_trigger_on_its_schedule(sealed, admin, escrow, client, events):
    import threading
    import time

    from broker.services.worker import run_forever

    past = AGREEMENT.replace("{trustee_vote: {count: 2}}", "{date: 2001-01-01}")
    assert client.put(PATH, json={"text": past}, headers=admin.auth).status_code == 200
    assert client.get(PATH).json["state"] == "sealed"  # attaching fires nothing: the worker does
    stop = threading.Event()
    worker = threading.Thread(target=run_forever, args=(escrow, stop, 0.05))
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while not events("agreement.triggered") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(30)
    assert client.get(PATH).json["state"] == "released: board"
    reasons = events("agreement.triggered")[0]["details"]["reasons"]
    assert reasons == ["the date 2001-01-01 has come"]


def test_the_public_pages_show_the_agreement(attached, admin, trustee, client):
    tina, tina_key = trustee("tina@trust.example")
    assert vote(tina, tina_key).status_code == 201
    home = client.get("/").get_data(as_text=True)
    assert 'href="/agreements/acme-ai/gpt-small/2024-05">Release agreement</a>: sealed' in home
    page = client.get("/agreements/acme-ai/gpt-small/2024-05")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "lab-gone: when the lab silent for 30 days, requests are decided under policy " \
           "acme-ai-auto" in text
    assert "1 more trustee vote (of tom@trust.example, tess@trust.example)" in text
    assert "tina@trust.example: release" in text and attached["sha256"] in text
    assert '<span class="badge">sealed</span>' in text
    assert "<dt>Last check-in of the lab</dt><dd>never</dd>" in text
    assert admin.post("/api/v1/orgs/acme-ai/checkins").status_code == 200
    text = client.get("/agreements/acme-ai/gpt-small/2024-05").get_data(as_text=True)
    assert "<dt>Last check-in of the lab</dt><dd>never</dd>" not in text
    assert "<dt>Last check-in of the lab</dt><dd>" in text
    assert client.get("/agreements/acme-ai/gpt-small/1999").status_code == 404
