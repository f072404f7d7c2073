"""Trustees' votes proven by an age challenge (instead of an SSH signature), through the API, on
SQLite and PostgreSQL: the vote counts toward the quorum and can be withdrawn; a wrong answer,
an expired or reused challenge, another trustee's challenge or one for another vote is refused
with a clear error, and no vote is recorded."""

from __future__ import annotations

import hashlib
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from test_agreements import AGREEMENT, PATH, WEAKER

from broker import age

CHALLENGES = PATH + "/vote-challenges"


@pytest.fixture
def attached(sealed, person) -> dict:
    admin = person("ada@acme.example", (("acme-ai", "admin"),))
    made = admin.client.put(PATH, json={"text": AGREEMENT}, headers=admin.auth)
    assert made.status_code == 200, made.json
    return made.json["agreement"]


@pytest.fixture
def trustee(person):
    """trustee(email) -> an Actor logged in just now, with a proven age key."""

    def make(email: str):
        actor = person(email)
        actor.add_key()
        return actor

    return make


def decrypt(actor, made: dict) -> str:
    out = io.BytesIO()
    age.decrypt(io.BytesIO(made["challenge"].encode()), out, actor.identities)
    return out.getvalue().decode()


def secret_of(actor, made: dict) -> str:
    return re.search(r"^secret: ([0-9a-f]{64})$", decrypt(actor, made), re.M).group(1)


def ask(actor, **body):
    made = actor.post(CHALLENGES, body)
    assert made.status_code == 201, made.json
    return made.json


def answer(actor, made: dict, secret: str | None = None, **body):
    return actor.post(PATH + "/votes", {"challenge": made["id"],
                                        "response": secret or secret_of(actor, made), **body})


def vote(actor):
    return answer(actor, ask(actor))


def test_a_vote_by_age_challenge_counts_toward_the_quorum_and_can_be_withdrawn(
    attached, trustee, events
):
    tina = trustee("tina@trust.example")
    made = ask(tina)
    assert made["key"] == tina.keys[0] and made["id"].startswith("vc_")
    plaintext = decrypt(tina, made)
    # the encrypted text says which vote answering it casts: the very vote message
    assert f"---\n{made['message']}---\n" in plaintext
    assert "version: acme-ai/gpt-small@2024-05" in plaintext and "vote: release" in plaintext
    first = answer(tina, made)
    assert first.status_code == 201, first.json
    assert first.json["vote"]["proof"] == "age-challenge"
    assert first.json["vote"]["key"] == tina.keys[0] and first.json["vote"]["ssh_key"] is None
    assert first.json["agreement"]["triggers"][0]["missing"] == [
        "1 more trustee vote (of tom@trust.example, tess@trust.example)"]
    logged = events("agreement.voted")[0]["details"]
    assert logged["proof"] == "age-challenge" and logged["challenge"] == made["id"]
    assert logged["key"] == tina.keys[0] and logged["key_fingerprint"].startswith("SHA256:")
    assert secret_of(tina, made) not in str(events("agreement.voted"))

    withdrawn = tina.post(PATH + "/votes/withdraw")
    assert withdrawn.status_code == 200 and withdrawn.json["agreement"]["state"] == "sealed"
    tom = trustee("tom@trust.example")
    assert vote(tom).json["agreement"]["state"] == "sealed"  # one vote counts now, not two
    again = vote(tina)  # a new challenge for the new vote
    assert again.status_code == 201 and again.json["agreement"]["state"] == "released: board"
    assert len(events("agreement.triggered")) == 1
    assert [e["details"]["proof"] for e in events("agreement.voted")] == ["age-challenge"] * 3
    late = tina.post(PATH + "/votes/withdraw")
    assert late.status_code == 409 and "the quorum was reached" in late.json["detail"]


def test_an_amendment_vote_by_age_challenge(attached, trustee, client):
    proposal = hashlib.sha256(WEAKER.encode()).hexdigest()
    tina = trustee("tina@trust.example")
    made = ask(tina, proposal_sha256=proposal)
    assert f"vote: amend to {proposal}" in decrypt(tina, made)
    # the challenge is tied to its proposal: it casts no release vote
    as_release = answer(tina, made)
    assert as_release.status_code == 409 and "another vote" in as_release.json["detail"]
    voted = answer(tina, made, proposal_sha256=proposal)
    assert voted.status_code == 201 and voted.json["vote"]["vote"] == "amend"
    assert client.get(PATH).json["state"] == "sealed"


def test_wrong_expired_reused_and_others_challenges_are_refused_and_record_nothing(
    attached, trustee, escrow, client, events, make_person
):
    tina, tom = trustee("tina@trust.example"), trustee("tom@trust.example")
    made = ask(tina)

    wrong = answer(tina, made, "00" * 32)
    assert wrong.status_code == 422
    assert f"does not match vote challenge {made['id']}; no vote is recorded" in \
        wrong.json["detail"]
    assert answer(tina, made, "not a secret").status_code == 422

    stolen = answer(tom, made, secret_of(tina, made))  # tom answers tina's challenge
    assert stolen.status_code == 403
    assert f"vote challenge {made['id']} was issued to another trustee" in stolen.json["detail"]

    missing = tina.post(PATH + "/votes", {"challenge": "vc_0000", "response": "00" * 32})
    assert missing.status_code == 404 and "does not exist" in missing.json["detail"]

    expired = ask(tina)
    _expire(escrow, expired["id"])
    late = answer(tina, expired)
    assert late.status_code == 409 and late.json["title"] == "challenge expired"
    assert f"vote challenge {expired['id']} expired at" in late.json["detail"]
    assert "--identity FILE" in late.json["hint"]

    assert events("agreement.voted") == [] and client.get(PATH).json["votes"] == []

    # answered once, it casts no second vote, not even after a withdrawal
    assert answer(tina, made).status_code == 201
    assert tina.post(PATH + "/votes/withdraw").status_code == 200
    reused = answer(tina, made)
    assert reused.status_code == 409
    assert f"vote challenge {made['id']} was already answered" in reused.json["detail"]
    assert len(events("agreement.voted")) == 1
    assert [v["withdrawn_at"] is not None for v in client.get(PATH).json["votes"]] == [True]

    # not a trustee, or a login too old: no challenge at all
    outsider = trustee("mallory@evil.example")
    refused = outsider.post(CHALLENGES)
    assert refused.status_code == 403 and "not a trustee" in refused.json["detail"]
    stale = make_person("tess@trust.example", minutes_ago=30)
    old = client.post(CHALLENGES, json={}, headers={"Authorization": f"Bearer {stale.token}"})
    assert old.status_code == 401 and old.json["title"] == "fresh login required"


def test_the_key_is_chosen_when_a_trustee_has_several(attached, trustee):
    tina = trustee("tina@trust.example")
    tina.add_key()
    which = tina.post(CHALLENGES)
    assert which.status_code == 422 and "say which one" in which.json["detail"]
    by_id = ask(tina, key=tina.keys[1])
    assert by_id["key"] == tina.keys[1]
    by_recipient = ask(tina, key=tina.identities[0].to_recipient().encode())
    assert by_recipient["key"] == tina.keys[0]
    unknown = tina.post(CHALLENGES, {"key": age.generate_x25519_identity().to_recipient()
                                     .encode()})
    assert unknown.status_code == 404 and "not a proven key of yours" in unknown.json["detail"]
    assert answer(tina, by_id).status_code == 201


def _expire(escrow, challenge_id: str) -> None:
    """What the clock would do: the challenge's 15 minutes are over."""
    from broker.adapters.db.models import AgreementVoteChallenge

    with escrow.uow() as uow:
        row = uow.session.get(AgreementVoteChallenge, challenge_id)
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        uow.commit()
