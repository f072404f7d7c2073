"""Hosted access needs no key (issue 19): a policy that allows inference to anyone verified gives
it to a person who registered no key, the grant is pinned to none, and only weights still ask
for a proven key; through the API, on SQLite and PostgreSQL. (Querying the hosted model with
such a grant: tests/hosted/test_keyless.py.)"""

from __future__ import annotations

import pytest
from access_support import WEIGHTS, set_grant, stored_grant
from sqlalchemy.exc import IntegrityError

HOSTED = "acme-ai/hosted-small"
# the default eligibility, proven_key: true, read as the policy schema documents it: for weights
HOSTED_POLICY = """\
organisation: acme-ai
models: ["acme-ai/hosted-*"]
nda: null
eligibility: {verified_email: true, proven_key: true}
approvals: {auto: true}
grant: {default_days: 7, max_days: 10, releases_per_file: 1, renewal: true,
        requests_per_minute: 30, tokens_per_day: 5000}
access: [weights, inference, internals]
"""


@pytest.fixture
def policy_dir(policy_dir):
    (policy_dir / "acme-ai-hosted.yaml").write_text(HOSTED_POLICY)
    return policy_dir


@pytest.fixture
def hosted(lab) -> dict:
    return lab.deposit(WEIGHTS, model=HOSTED, version="1")


@pytest.fixture
def keyless(person):
    """A verified person with no key at all."""
    return person("kim@uni.example")


def _ask(actor, kind: str, **extra):
    return actor.ask(model=HOSTED, version="1", kind=kind, **extra)


@pytest.mark.parametrize("kind", ["inference", "internals"])
def test_a_person_without_a_key_gets_hosted_access_pinned_to_no_key(
        hosted, keyless, escrow, events, kind):
    made = _ask(keyless, kind)
    assert made.status_code == 201, made.json
    assert made.json["request"]["state"] == "approved" and made.json["request"]["key_id"] is None
    grant = made.json["grant"]
    assert grant["kind"] == kind
    assert (grant["key_id"], grant["recipient"], grant["key_fingerprint"]) == (None, None, None)
    assert (grant["requests_per_minute"], grant["tokens_per_day"]) == (30, 5000)
    stored = stored_grant(escrow, grant["id"])
    assert stored.key_id is None and stored.recipient is None
    created = events("grant.created")[-1]
    assert created["subject"]["kind"] == kind and created["subject"]["grant"] == grant["id"]
    assert "key" not in created["details"] and "key_fingerprint" not in created["details"]
    listed = keyless.get("/api/v1/grants").json["grants"]
    assert [g["id"] for g in listed] == [grant["id"]] and listed[0]["key_id"] is None


def test_a_keyless_grant_releases_nothing_and_the_refusal_is_on_the_log(
        hosted, keyless, events):
    grant = _ask(keyless, "inference").json["grant"]
    refused = keyless.post(f"/api/v1/grants/{grant['id']}/files/0/release")
    assert refused.status_code == 403
    assert "hosted access gives no weights" in refused.json["detail"]
    assert events("key.release_refused")[-1]["details"]["reason"] == "hosted_access_only"
    assert events("key.released") == []


def test_weights_still_need_a_proven_key(hosted, keyless):
    refused = _ask(keyless, "weights")
    assert refused.status_code == 422, refused.json
    assert refused.json["detail"].endswith("recorded as denied: a proven key")
    keyless.add_key()
    granted = _ask(keyless, "weights")
    assert granted.status_code == 201, granted.json
    assert granted.json["grant"]["key_id"] == keyless.keys[0]


def test_a_key_named_for_hosted_access_is_refused_clearly(hosted, researcher):
    refused = _ask(researcher, "inference", key_id=researcher.keys[0])
    assert refused.status_code == 422, refused.json
    assert "hosted access needs no key" in refused.json["detail"]
    assert "leave the key out" in refused.json["hint"]
    explained = researcher.post("/api/v1/requests/explain", {
        "model": HOSTED, "version": "1", "kind": "internals", "key_id": researcher.keys[0]})
    assert explained.status_code == 422, explained.json


def test_a_researcher_with_keys_gets_a_hosted_grant_pinned_to_none(hosted, researcher):
    grant = _ask(researcher, "inference").json["grant"]
    assert grant["key_id"] is None and grant["recipient"] is None


def test_a_keyless_inference_grant_is_renewed_without_a_key(hosted, keyless, escrow):
    first = _ask(keyless, "inference").json["grant"]
    made = keyless.post(f"/api/v1/grants/{first['id']}/renew", {"days": 5})
    assert made.status_code == 201, made.json
    assert made.json["request"]["state"] == "approved"
    renewal = made.json["grant"]
    assert renewal["kind"] == "inference" and renewal["key_id"] is None
    assert renewal["renews_grant_id"] == first["id"]
    old, new = stored_grant(escrow, first["id"]), stored_grant(escrow, renewal["id"])
    assert new.not_before == old.expires_at and new.key_id is None
    assert new.tokens_per_day == 5000


def test_an_ended_hosted_grant_owes_no_close_out(hosted, keyless, escrow):
    """Nothing was released, so nothing is to be deleted: a policy's no_overdue_closeouts
    does not hold back a person whose inference grant ended long ago."""
    from datetime import timedelta

    from broker.domain.clock import now
    from broker.services import closeouts

    grant = _ask(keyless, "inference").json["grant"]
    set_grant(escrow, grant["id"], not_before=now() - timedelta(days=60),
              expires_at=now() - timedelta(days=50))
    with escrow.uow() as uow:
        assert closeouts.due_closeouts(uow, int(keyless.user_id), now()) == ()
    refused = keyless.post(f"/api/v1/grants/{grant['id']}/closeout",
                           {"attest_deleted": True, "typed_name": "Kim Lee"})
    assert refused.status_code == 409, refused.json
    assert "nothing to delete" in refused.json["detail"]


def test_the_database_refuses_a_weights_grant_without_a_key(hosted, keyless, escrow):
    """The check constraint of migration 0022: whatever the code does, a grant that releases
    keys is pinned to one."""
    from sqlalchemy import update

    from broker.adapters.db.models import Grant

    grant = _ask(keyless, "inference").json["grant"]
    with escrow.uow() as uow:
        with pytest.raises(IntegrityError):
            uow.session.execute(update(Grant).where(Grant.id == grant["id"])
                                .values(kind="weights"))
            uow.session.flush()
        uow.session.rollback()
