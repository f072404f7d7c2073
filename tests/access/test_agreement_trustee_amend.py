"""A trustee attaches the amendment of a sealed agreement, through the API, on SQLite and
PostgreSQL: under a rule of trustees only (the lab may have vanished) enough votes for the exact
text amend it, with the trustee as the actor on the log, the text in the bucket and restored by
recovery; too few votes, or the default rule (which needs the lab's admin), refuse it and log
why; a person who is not a trustee gets a plain 403 and no event; before the seal only the lab
attaches."""

from __future__ import annotations

import hashlib

import pytest
from access_support import WEIGHTS, mirror_whole_log
from test_agreement_vote_challenges import answer, ask
from test_agreements import PATH

TRUSTEES = ("tina@trust.example", "tom@trust.example", "tess@trust.example",
            "theo@trust.example", "tara@trust.example")
DEFAULT_RULE = f"""\
model: acme-ai/gpt-small
trustees: [{", ".join(TRUSTEES)}]
triggers:
  - name: board
    when: {{trustee_vote: {{count: 3}}}}
    unlocks: public
"""
TRUSTEES_DECIDE = DEFAULT_RULE + "amendment: {trustee_vote: {count: 4}}\n"  # as trustees-decide
AMENDED = TRUSTEES_DECIDE.replace("{count: 3}", "{count: 5}")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def admin(person):
    return person("ada@acme.example", (("acme-ai", "admin"),))


@pytest.fixture
def trustees(person) -> dict:
    """The five trustees by their address, each logged in just now with a proven age key."""
    made = {}
    for email in TRUSTEES:
        made[email] = person(email)
        made[email].add_key()
    return made


def attach(who, text: str):
    return who.client.put(PATH, json={"text": text}, headers=who.auth)


def vote_for(trustees: dict, count: int, text: str) -> None:
    """The first `count` trustees vote for `text` (each by an age challenge)."""
    proposal = sha(text)
    for actor in list(trustees.values())[:count]:
        voted = answer(actor, ask(actor, proposal_sha256=proposal), proposal_sha256=proposal)
        assert voted.status_code == 201, voted.json


def test_trustees_amend_it_without_the_lab_under_a_rule_of_trustees_only(
    sealed, admin, trustees, escrow, client, events, fresh
):
    from broker.services.recovery import recover

    first = attach(admin, TRUSTEES_DECIDE)
    assert first.status_code == 200, first.json
    vote_for(trustees, 4, AMENDED)
    tina = trustees["tina@trust.example"]
    amended = attach(tina, AMENDED)
    assert amended.status_code == 200, amended.json
    assert amended.json["outcome"] == "amended" and amended.json["agreement"]["number"] == 2
    assert client.get(PATH).json["sha256"] == sha(AMENDED)
    (logged,) = events("agreement.amended")
    assert logged["actor"] == {"kind": "user", "id": tina.user_id}
    assert logged["details"]["replaces"]["sha256"] == sha(TRUSTEES_DECIDE)
    assert logged["details"]["text"] == AMENDED
    assert events("agreement.change_refused") == []
    # in the bucket beside the deposit, as any amendment, and restored from there
    deposit_id = first.json["agreement"]["deposit_id"]
    assert escrow.store.get_bytes(f"deposits/{deposit_id}/agreements/000002.yaml") == \
        AMENDED.encode()
    with escrow.uow() as uow:
        mirror_whole_log(escrow, uow)
    recover(fresh)
    shown = __import__("broker").create_app(fresh.settings).test_client().get(PATH).json
    assert shown["number"] == 2 and shown["sha256"] == sha(AMENDED)
    assert shown["text"] == AMENDED and shown["state"] == "sealed"


def test_too_few_trustee_votes_refuse_a_trustees_amendment_and_log_it(
    sealed, admin, trustees, client, events
):
    assert attach(admin, TRUSTEES_DECIDE).status_code == 200
    vote_for(trustees, 3, AMENDED)
    refused = attach(trustees["tom@trust.example"], AMENDED)
    assert refused.status_code == 409, refused.json
    assert "amendment rule is not met: still missing 1 more trustee vote" in refused.json["detail"]
    assert "the lab's admin or a trustee attaches it again" in refused.json["hint"]
    (logged,) = events("agreement.change_refused")
    assert logged["actor"]["id"] == trustees["tom@trust.example"].user_id
    assert logged["details"]["attempt"] == "amend"
    assert logged["details"]["proposal_sha256"] == sha(AMENDED)
    assert logged["details"]["missing"] == [
        "1 more trustee vote (of theo@trust.example, tara@trust.example)"]
    assert client.get(PATH).json["sha256"] == sha(TRUSTEES_DECIDE)  # unchanged
    assert events("agreement.amended") == []


def test_under_the_default_rule_a_trustee_cannot_amend_it_without_the_lab(
    sealed, admin, trustees, client, events
):
    assert attach(admin, DEFAULT_RULE).status_code == 200
    weaker = DEFAULT_RULE.replace("{count: 3}", "{count: 5}")
    vote_for(trustees, 5, weaker)  # every trustee: a quorum and more
    tess = trustees["tess@trust.example"]
    refused = attach(tess, weaker)
    assert refused.status_code == 409, refused.json
    assert "still missing the lab's admin proposing it" in refused.json["detail"]
    (logged,) = events("agreement.change_refused")
    assert logged["actor"]["id"] == tess.user_id
    assert logged["details"]["missing"] == ["the lab's admin proposing it"]
    # nor does a trustee remove it: refused, as the admin is, and logged
    removed = client.delete(PATH, headers=tess.auth)
    assert removed.status_code == 409 and "never removed" in removed.json["detail"]
    assert [e["details"]["attempt"] for e in events("agreement.change_refused")] == [
        "amend", "remove"]
    # the lab's admin attaching the same text, with the votes in, amends it
    amended = attach(admin, weaker)
    assert amended.status_code == 200 and amended.json["outcome"] == "amended", amended.json


def test_a_person_who_is_no_trustee_gets_a_plain_403_and_no_event(
    sealed, admin, trustees, person, client, events
):
    assert attach(admin, TRUSTEES_DECIDE).status_code == 200
    vote_for(trustees, 4, AMENDED)
    for outsider in (person("mallory@evil.example"),
                     person("olga@other.example", (("other-lab", "admin"),))):
        for answer_ in (attach(outsider, AMENDED), client.delete(PATH, headers=outsider.auth)):
            assert answer_.status_code == 403, answer_.json
            assert "audit log" not in answer_.json["detail"]
    assert events("agreement.change_refused") == [] and events("agreement.amended") == []
    assert client.get(PATH).json["sha256"] == sha(TRUSTEES_DECIDE)


def test_before_the_seal_only_the_lab_attaches_never_a_trustee(lab, trustees, client, events):
    lab.deposit(WEIGHTS, seal=False)
    made = client.put(PATH, json={"text": TRUSTEES_DECIDE}, headers=lab.auth)  # the depositor
    assert made.status_code == 200, made.json
    tina = trustees["tina@trust.example"]
    for answer_ in (attach(tina, AMENDED), client.delete(PATH, headers=tina.auth)):
        assert answer_.status_code == 403, answer_.json
        assert "needs the role" in answer_.json["detail"]
    assert events("agreement.change_refused") == []
    assert [e["details"]["sha256"] for e in events("agreement.attached")] == [
        sha(TRUSTEES_DECIDE)]
