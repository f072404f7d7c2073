"""Studies of live use, with consent, end to end: a real broker and model worker (conftest.py),
the official OpenAI client, `escrow study …` as people type it, the Debian `age` tool.

A researcher registers a study with the team's age recipient, the lab's admin approves it, a
person consents; their exchanges (streamed or not) are captured encrypted to the team only, and
stop at withdrawal; `escrow study fetch` decrypts them and resumes. The tests run in file order
on one module-wide setup."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from conftest import NAME, Hosted, ask, broker_escrow, make_person
from live import ESCROW_BIN, require_part

CHAT_PROMPT = "Zebra quartz whistles over the escrow"  # distinctive: searched for in stored bytes
COMPLETION_PROMPT = "Marigold ledger of the seventh vault"
STREAM_PROMPT = "Copper lanterns hum beside the archive"
STUDY = "tutoring-2027"


def client(hosted: Hosted, token: str):
    import openai

    return openai.OpenAI(base_url=hosted.broker.url + "/v1", api_key=token, max_retries=0,
                         timeout=60)


def cli(hosted: Hosted, person, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`escrow ARGS` as `person` (their token), against the live broker."""
    env = {**hosted.broker.env, "ESCROW_TOKEN": person.token}
    result = subprocess.run([ESCROW_BIN, *args], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    if check:
        assert result.returncode == 0, f"escrow {' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def api(hosted: Hosted, person, method: str, path: str, body: dict | None = None):
    return requests.request(method, hosted.broker.url + path, json=body, timeout=30,
                            headers={"Authorization": f"Bearer {person.token}"})


class Team:
    """The study team's age identity (a file, as the team keeps it) and a stranger's."""

    def __init__(self, base: Path) -> None:
        from broker import age

        self.identity = age.generate_x25519_identity()
        self.other = age.generate_x25519_identity()
        self.recipient = str(self.identity.to_recipient())
        self.identity_file = base / "team-key.txt"
        self.other_file = base / "other-key.txt"
        for path, identity in ((self.identity_file, self.identity), (self.other_file, self.other)):
            path.write_text(identity.encode() + "\n")
            path.chmod(0o600)


@pytest.fixture(scope="module")
def team(hosted) -> Team:
    folder = hosted.base / "team"
    folder.mkdir()
    return Team(folder)


@pytest.fixture(scope="module")
def people(hosted):
    """rosa registers the study; ada is the lab's admin; pat consents; nina never does."""
    from broker.domain.principals import OPERATOR
    from broker.services import members

    found = {name: make_person(hosted.broker, name) for name in ("rosa", "ada", "pat", "nina")}
    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        members.set_member_role(uow, OPERATOR, "acme-ai", str(found["ada"].user_id), "admin",
                                True)
    for name in ("pat", "nina"):
        ask(hosted.broker, found[name], "inference")
    return found


def captures(hosted: Hosted) -> list:
    from sqlalchemy import select

    from broker.adapters.db.models import StudyCapture

    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        rows = uow.session.scalars(select(StudyCapture).order_by(StudyCapture.created_at)).all()
        return [(c.id, c.object_key, c.size, c.sha256) for c in rows]


def wait_captures(hosted: Hosted, count: int, timeout_s: float = 15) -> list:
    """The captures once there are `count` (a stream's is written when its relay ends)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = captures(hosted)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def stored(hosted: Hosted, key: str) -> bytes:
    with broker_escrow(hosted.broker) as escrow:
        return escrow.store.get_bytes(key)


def decrypt(data: bytes, identity) -> dict:
    import io

    from broker import age

    out = io.BytesIO()
    age.decrypt(io.BytesIO(data), out, [identity])
    return json.loads(out.getvalue())


def actions(hosted: Hosted) -> list[tuple[str, dict, dict, bytes]]:
    from sqlalchemy import select

    from broker.adapters.db.models import AuditEvent

    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        leaves = uow.session.scalars(select(AuditEvent.leaf).order_by(AuditEvent.seq)).all()
    events = [json.loads(leaf) for leaf in leaves]
    return [(e["action"], e["subject"], e["details"], leaf) for e, leaf in zip(events, leaves)]


def test_a_registered_study_takes_no_consent_until_the_lab_approves_it(hosted, people, team):
    rosa, ada, pat = people["rosa"], people["ada"], people["pat"]
    made = last_json(cli(hosted, rosa, "study", "register", "acme-ai/tiny", "--name", STUDY,
                         "--title", "Tutoring over a year", "--purpose",
                         "how people ask a retired model for help, over time",
                         "--recipient", team.recipient, "--json"))
    assert (made["state"], made["model"], made["recipients"]) == (
        "proposed", "acme-ai/tiny", [team.recipient])

    refused = api(hosted, pat, "POST", f"/api/v1/studies/{STUDY}/consent")
    assert refused.status_code == 409
    assert "only an approved study takes consent" in refused.json()["detail"]
    assert "escrow study approve" in refused.json()["hint"]
    shown = cli(hosted, pat, "study", "show", STUDY, check=False)  # not public while proposed
    assert shown.returncode != 0 and "no study" in shown.stderr

    not_lab = cli(hosted, rosa, "study", "approve", STUDY, check=False)  # the owner is no admin
    assert not_lab.returncode != 0 and "admin" in not_lab.stderr
    approved = last_json(cli(hosted, ada, "study", "approve", STUDY, "--note", "ok", "--json"))
    assert (approved["state"], approved["decision_note"]) == ("approved", "ok")
    listed = last_json(cli(hosted, pat, "study", "list", "--json"))["studies"]
    assert [(s["name"], s["consenting"]) for s in listed] == [(STUDY, False)]


def test_a_consenting_persons_exchanges_are_captured_encrypted_to_the_study_only(
        hosted, people, team):
    from broker import age

    pat = people["pat"]
    given = last_json(cli(hosted, pat, "study", "consent", STUDY, "--json"))
    assert given["withdrawn_at"] is None and given["study"] == STUDY
    openai = client(hosted, pat.token)
    chat = openai.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": CHAT_PROMPT}], max_tokens=8,
        temperature=0)
    completion = openai.completions.create(model=NAME, prompt=COMPLETION_PROMPT, max_tokens=6,
                                           temperature=0)
    streamed = "".join(c.choices[0].delta.content or "" for c in openai.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": STREAM_PROMPT}], max_tokens=8,
        temperature=0, stream=True))
    found = wait_captures(hosted, 3)
    assert len(found) == 3

    documents = []
    for capture_id, key, size, sha256 in found:
        assert key.startswith(f"studies/{given['study_id']}/captures/")
        assert key.endswith(f"/{capture_id}.age")
        data = stored(hosted, key)
        assert len(data) == size and __import__("hashlib").sha256(data).hexdigest() == sha256
        for prompt in (CHAT_PROMPT, COMPLETION_PROMPT, STREAM_PROMPT):
            assert prompt.encode() not in data
        with pytest.raises(age.NoIdentityMatched):
            decrypt(data, team.other)
        documents.append(decrypt(data, team.identity))
    by_endpoint = {}
    for document in documents:
        assert document["participant"] == given["id"] and document["model"] == NAME
        by_endpoint.setdefault(document["endpoint"], []).append(document)
    plain, stream = sorted(by_endpoint["/v1/chat/completions"],
                           key=lambda d: bool(d["request"].get("stream")))
    assert plain["request"]["messages"] == [{"role": "user", "content": CHAT_PROMPT}]
    assert plain["request"]["max_tokens"] == 8 and plain["request"]["temperature"] == 0
    assert plain["response"]["choices"][0]["text"] == chat.choices[0].message.content
    assert plain["response"]["choices"][0]["finish_reason"] == chat.choices[0].finish_reason
    assert plain["response"]["usage"]["completion_tokens"] == chat.usage.completion_tokens
    assert stream["request"]["messages"][0]["content"] == STREAM_PROMPT
    assert stream["response"]["choices"][0]["text"] == streamed and streamed
    assert stream["response"]["truncated"] is False
    [legacy] = by_endpoint["/v1/completions"]
    assert legacy["request"]["prompt"] == COMPLETION_PROMPT
    assert legacy["response"]["choices"][0]["text"] == completion.choices[0].text

    # the Debian age tool reads them with the team's key, and not with another
    require_part(shutil.which("age") is not None, "the Debian age tool")
    data = stored(hosted, found[0][1])
    plain_out = subprocess.run(["age", "-d", "-i", str(team.identity_file)], input=data,
                               capture_output=True, check=True).stdout
    assert json.loads(plain_out)["capture"] == found[0][0]
    assert subprocess.run(["age", "-d", "-i", str(team.other_file)], input=data,
                          capture_output=True, check=False).returncode != 0


def test_no_plaintext_of_an_exchange_is_on_the_brokers_disk(hosted, people):
    """The database, the store and the broker's log hold no prompt of a captured exchange."""
    data_dir, log = hosted.broker.data_dir, hosted.broker.log
    files = [p for p in data_dir.rglob("*") if p.is_file()] + ([log] if log else [])
    assert any(p.suffix == ".age" for p in files)
    for path in files:
        content = path.read_bytes()
        for prompt in (CHAT_PROMPT, COMPLETION_PROMPT, STREAM_PROMPT):
            assert prompt.encode() not in content, path


def test_a_person_without_consent_is_not_captured(hosted, people):
    before = captures(hosted)
    openai = client(hosted, people["nina"].token)
    openai.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hello"}],
                                   max_tokens=3)
    "".join(c.choices[0].text for c in openai.completions.create(
        model=NAME, prompt="hello", max_tokens=3, stream=True))
    time.sleep(1.0)  # a stream's capture would be written as its relay ends
    assert captures(hosted) == before


def test_escrow_study_fetch_decrypts_every_capture_and_a_rerun_skips_them(
        hosted, people, team, tmp_path):
    rosa, pat = people["rosa"], people["pat"]
    found = captures(hosted)
    out = tmp_path / "captures"
    fetched = last_json(cli(hosted, rosa, "study", "fetch", STUDY, "--identity",
                            str(team.identity_file), "--out", str(out), "--json"))
    assert sorted(fetched["fetched"]) == sorted(c[0] for c in found) and not fetched["skipped"]
    for capture_id, key, *_ in found:
        document = json.loads((out / f"{capture_id}.json").read_text())
        assert document == decrypt(stored(hosted, key), team.identity)
        assert (out / f"{capture_id}.json").stat().st_mode & 0o077 == 0
    assert sorted(os.listdir(out)) == sorted(f"{c[0]}.json" for c in found)  # no temp file

    again = last_json(cli(hosted, rosa, "study", "fetch", STUDY, "--identity",
                          str(team.identity_file), "--out", str(out), "--json"))
    assert again["fetched"] == [] and sorted(again["skipped"]) == sorted(fetched["fetched"])
    (out / f"{found[1][0]}.json").unlink()  # as if interrupted before that one
    resumed = last_json(cli(hosted, rosa, "study", "fetch", STUDY, "--identity",
                            str(team.identity_file), "--out", str(out), "--json"))
    assert resumed["fetched"] == [found[1][0]] and len(resumed["skipped"]) == 2

    wrong = cli(hosted, rosa, "study", "fetch", STUDY, "--identity", str(team.other_file),
                "--out", str(tmp_path / "wrong"), check=False)
    assert wrong.returncode != 0
    assert not list((tmp_path / "wrong").glob("*.json"))
    other = cli(hosted, pat, "study", "fetch", STUDY, "--identity", str(team.identity_file),
                "--out", str(tmp_path / "pat"), check=False)  # only the owner
    assert other.returncode != 0 and "owner" in other.stderr

    first = api(hosted, rosa, "GET", f"/api/v1/studies/{STUDY}/captures?limit=2").json()
    assert len(first["captures"]) == 2 and first["next"] == first["captures"][-1]["id"]
    rest = api(hosted, rosa, "GET",
               f"/api/v1/studies/{STUDY}/captures?limit=2&after={first['next']}").json()
    assert [c["id"] for c in first["captures"] + rest["captures"]] == [c[0] for c in found]
    assert rest["next"] is None


def test_a_member_the_owner_adds_fetches_the_captures_too(hosted, people, team, tmp_path):
    rosa, nina, pat = people["rosa"], people["nina"], people["pat"]
    refused = cli(hosted, pat, "study", "member", "add", STUDY, "pat@uni.example", check=False)
    assert refused.returncode != 0 and "owner" in refused.stderr  # the owner adds, only
    added = last_json(cli(hosted, rosa, "study", "member", "add", STUDY, "nina@uni.example",
                          "--json"))
    assert [(m["user"], m["name"]) for m in added["members"]] == [(str(nina.user_id), "nina")]
    listed = cli(hosted, nina, "study", "member", "list", STUDY)
    assert f"user {nina.user_id}  nina" in listed.stdout
    found = captures(hosted)
    fetched = last_json(cli(hosted, nina, "study", "fetch", STUDY, "--identity",
                            str(team.identity_file), "--out", str(tmp_path / "nina"), "--json"))
    assert sorted(fetched["fetched"]) == sorted(c[0] for c in found)

    # the owner removes Nina: she fetches nothing more
    kept = cli(hosted, nina, "study", "member", "remove", STUDY, str(nina.user_id), check=False)
    assert kept.returncode != 0 and "owner" in kept.stderr
    removed = cli(hosted, rosa, "study", "member", "remove", STUDY, "nina@uni.example")
    assert "no members besides the owner" in removed.stdout
    again = cli(hosted, nina, "study", "fetch", STUDY, "--identity", str(team.identity_file),
                "--out", str(tmp_path / "nina-again"), check=False)
    assert again.returncode != 0 and "escrow study member add" in again.stderr


def test_an_altered_capture_stops_the_fetch_and_a_rerun_resumes_where_it_stopped(
        hosted, people, team, tmp_path):
    rosa = people["rosa"]
    found = captures(hosted)
    altered = hosted.broker.data_dir / "objects" / found[1][1]
    original = altered.read_bytes()
    altered.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    out = tmp_path / "resumed"
    try:
        stopped = cli(hosted, rosa, "study", "fetch", STUDY, "--identity",
                      str(team.identity_file), "--out", str(out), check=False)
    finally:
        altered.write_bytes(original)
    assert stopped.returncode != 0
    assert f"capture {found[1][0]}" in stopped.stderr and "altered" in stopped.stderr
    assert sorted(os.listdir(out)) == [f"{found[0][0]}.json"]  # nothing of the altered one
    resumed = last_json(cli(hosted, rosa, "study", "fetch", STUDY, "--identity",
                            str(team.identity_file), "--out", str(out), "--json"))
    assert resumed["skipped"] == [found[0][0]]
    assert resumed["fetched"] == [c[0] for c in found[1:]]


def test_a_capture_that_fails_leaves_the_answer_whole_and_logs_no_content(hosted, people):
    """The store refuses the capture (its day's prefix is an object): the person still gets
    the answer; nothing is indexed; the broker's log names the study, not the exchange."""
    from broker.domain.clock import now

    before = captures(hosted)
    study_id = before[0][1].split("/")[1]
    day = hosted.broker.data_dir / "objects" / "studies" / study_id / "captures" / \
        now().date().isoformat()
    kept = day.with_name("kept")
    day.rename(kept)
    day.write_bytes(b"in the way")
    try:
        prompt = "Obsidian harbour of failed captures"
        openai = client(hosted, people["pat"].token)
        answer = openai.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": prompt}], max_tokens=4)
        assert answer.choices[0].message.content is not None
        streamed = list(openai.completions.create(model=NAME, prompt=prompt, max_tokens=4,
                                                  stream=True))
        assert streamed
        time.sleep(1.0)
        assert captures(hosted) == before
    finally:
        day.unlink()
        kept.rename(day)
    log = hosted.broker.log.read_text(errors="replace")
    assert f"study {study_id}: an exchange was not captured (StorageError)" in log
    assert prompt not in log


def test_a_turn_on_the_chat_page_is_captured_like_a_v1_call(hosted, people, team):
    """The chat page (/me/chat/GRANT) is the hosted model in use too: a consenting person's
    turn there is donated as a /v1 chat completion would be."""
    import html
    import re

    from broker.adapters.db.models import User
    from broker.domain.principals import OPERATOR
    from broker.services import sessions

    pat = people["pat"]
    before = captures(hosted)
    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        secret = sessions.create_login_link(uow, OPERATOR, uow.session.get(User, pat.user_id))
        uow.commit()
    browser = requests.Session()
    link = f"{hosted.broker.url}/auth/link/{secret}"
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get(link, timeout=30).text)
    browser.post(link, data={"csrf_token": token.group(1)}, timeout=30)
    me = browser.get(f"{hosted.broker.url}/me", timeout=30).text
    grant = re.search(r'href="/me/chat/(gr_[0-9a-f]+)"', me).group(1)
    url = f"{hosted.broker.url}/me/chat/{grant}"
    page = browser.get(url, timeout=30).text
    said = "Saffron orbit of the chat page"
    answered = browser.post(url, timeout=120, data={
        "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', page).group(1),
        "conversation": html.unescape(
            re.search(r'name="conversation" value="([^"]*)"', page).group(1)),
        "message": said, "max_tokens": "5"})
    assert answered.status_code == 200, answered.text

    found = captures(hosted)
    [new] = [c for c in found if c not in before]
    data = stored(hosted, new[1])
    assert said.encode() not in data
    document = decrypt(data, team.identity)
    assert document["endpoint"] == "/v1/chat/completions" and document["model"] == NAME
    assert document["request"]["messages"][-1] == {"role": "user", "content": said}
    answer = document["response"]["choices"][0]["text"]
    assert html.escape(answer, quote=False) in answered.text


def test_withdrawal_stops_capture_at_once_and_consent_is_on_the_log_without_content(
        hosted, people, team):
    from broker.domain.clock import now
    from broker.services import study_captures

    pat = people["pat"]
    before = captures(hosted)
    done = last_json(cli(hosted, pat, "study", "withdraw", STUDY, "--json"))
    assert done["withdrawn_at"]
    openai = client(hosted, pat.token)
    openai.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "again"}],
                                   max_tokens=3)
    "".join(c.choices[0].delta.content or "" for c in openai.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "again"}], max_tokens=3, stream=True))
    time.sleep(1.0)
    assert captures(hosted) == before

    # The UTC days of the captures: one count per study and day (two in a run across midnight).
    days = sorted({key.split("/captures/")[1].split("/")[0] for _, key, _, _ in before})
    with broker_escrow(hosted.broker) as escrow:
        moment = now()
        ended = study_captures.report_due(escrow, moment)  # days that ended before now
        assert study_captures.report_due(escrow, moment) == 0  # today has not ended
        after_today = moment + timedelta(days=1) + study_captures.REPORT_GRACE
        assert ended + study_captures.report_due(escrow, after_today) == len(days)
        assert study_captures.report_due(escrow, after_today + timedelta(hours=1)) == 0  # once
    events = actions(hosted)
    names = [a for a, *_ in events if a.startswith("study.")]
    assert names == ["study.registered", "study.approved", "study.consent_given",
                     "study.member_added", "study.member_removed",
                     "study.consent_withdrawn", *["study.captures"] * len(days)]
    counted = [d for a, _, d, _ in events if a == "study.captures"]
    assert sum(c["captures"] for c in counted) == len(before)
    assert [c["day"] for c in counted] == days
    consent = [s for a, s, _, _ in events if a == "study.consent_given"][0]
    assert consent["user"] == str(pat.user_id) and consent["model"] == "acme-ai/tiny"
    leaves = b"".join(leaf for *_, leaf in events)
    for prompt in (CHAT_PROMPT, COMPLETION_PROMPT, STREAM_PROMPT):
        assert prompt.encode() not in leaves
    pseudonym = decrypt(stored(hosted, before[0][1]), team.identity)["participant"]
    assert pseudonym.startswith("sc_") and pseudonym.encode() not in leaves  # not linkable


def test_a_closed_study_captures_nothing_and_takes_no_consent(hosted, people):
    rosa, pat = people["rosa"], people["pat"]
    cli(hosted, pat, "study", "consent", STUDY)
    closed = last_json(cli(hosted, rosa, "study", "close", STUDY, "--json"))
    assert closed["state"] == "closed" and closed["closed_at"]
    before = captures(hosted)
    client(hosted, pat.token).completions.create(model=NAME, prompt="after", max_tokens=2)
    assert captures(hosted) == before
    refused = api(hosted, pat, "POST", f"/api/v1/studies/{STUDY}/consent")
    assert refused.status_code == 409 and "closed" in refused.json()["detail"]
