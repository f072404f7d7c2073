"""A researcher renews an active grant, under the policy's `grant.renewal`, through the API, on
SQLite and PostgreSQL. acme-ai/renewable-* is reviewed, acme-ai/quick-* approved automatically
(both allow renewal); acme-ai/gpt-small's policy does not allow it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from access_support import RENEWABLE_POLICY, WEIGHTS, set_grant, stored_grant

RENEWABLE = "acme-ai/renewable-small"
QUICK = "acme-ai/quick-small"


def granted_for(researcher, reviewer, model: str = RENEWABLE, **extra) -> dict:
    made = researcher.ask(model=model, version="1", **extra)
    assert made.status_code == 201, made.json
    if "grant" in made.json:
        return made.json["grant"]
    request_id = made.json["request"]["id"]
    decided = reviewer.post(f"/api/v1/requests/{request_id}/approve")
    assert decided.status_code == 200, decided.json
    return decided.json["grant"]


def renew(actor, grant_id: str, **body):
    return actor.post(f"/api/v1/grants/{grant_id}/renew", body)


@pytest.fixture
def renewable(lab) -> dict:
    return lab.deposit(WEIGHTS, model=RENEWABLE, version="1")


@pytest.fixture
def granted(renewable, researcher, reviewer) -> dict:
    """An active grant of the researcher on acme-ai/renewable-small@1 (14 days, key 0)."""
    return granted_for(researcher, reviewer)


# --- asking ---------------------------------------------------------------------------------


def test_a_renewal_is_a_request_naming_the_grant_for_the_reviewers(granted, researcher,
                                                                    reviewer, events):
    made = renew(researcher, granted["id"], days=10, purpose="second round of the study")
    assert made.status_code == 201, made.json
    asked = made.json["request"]
    assert asked["state"] == "pending" and "grant" not in made.json
    assert asked["renews_grant_id"] == granted["id"]
    assert asked["key_id"] == granted["key_id"]
    assert asked["purpose"] == "second round of the study"
    assert asked["days_requested"] == 10
    [shown] = reviewer.get("/api/v1/reviews").json["requests"]
    assert shown["id"] == asked["id"] and shown["renews_grant_id"] == granted["id"]
    assert shown["renews_grant"]["id"] == granted["id"]
    assert shown["renews_grant"]["expires_at"] == granted["expires_at"]
    assert shown["renews_grant"]["state"] == "active"
    logged = events("request.created")[-1]
    assert logged["subject"]["request"] == asked["id"]
    assert logged["subject"]["renews_grant"] == granted["id"]
    assert logged["details"]["policy"] == "acme-ai-renewable"


def test_the_purpose_defaults_to_the_first_requests(granted, researcher):
    asked = renew(researcher, granted["id"]).json["request"]
    assert asked["purpose"] == "interpretability study"
    assert asked["days_requested"] is None  # the policy's default


def test_approval_continues_the_grant_without_a_gap_for_the_same_key(
        escrow, granted, researcher, reviewer, events):
    researcher.add_key()  # newer than the grant: a renewal still keeps the grant's key
    request_id = renew(researcher, granted["id"], days=5).json["request"]["id"]
    decided = reviewer.post(f"/api/v1/requests/{request_id}/approve", {"comment": "ok"})
    assert decided.status_code == 200, decided.json
    assert decided.json["request"]["state"] == "approved"
    renewal = decided.json["grant"]
    assert renewal["key_id"] == granted["key_id"] == researcher.keys[0]
    assert renewal["recipient"] == granted["recipient"]
    assert renewal["renews_grant_id"] == granted["id"]
    assert renewal["state"] == "not-yet-valid"
    old, new = stored_grant(escrow, granted["id"]), stored_grant(escrow, renewal["id"])
    assert new.not_before == old.expires_at
    assert new.expires_at - new.not_before == timedelta(days=5)
    [created] = [e for e in events("grant.created") if e["subject"]["grant"] == renewal["id"]]
    assert created["subject"]["renews_grant"] == granted["id"]
    assert created["details"]["key"] == granted["key_id"]
    states = {g["id"]: g["state"] for g in researcher.get("/api/v1/grants").json["grants"]}
    assert states == {granted["id"]: "active", renewal["id"]: "not-yet-valid"}


def test_a_renewal_approved_after_the_old_grant_ended_starts_now(escrow, granted, researcher,
                                                                 reviewer):
    request_id = renew(researcher, granted["id"]).json["request"]["id"]
    ended = datetime.now(UTC) - timedelta(hours=1)
    set_grant(escrow, granted["id"], expires_at=ended)
    before = datetime.now(UTC)
    renewal = reviewer.post(f"/api/v1/requests/{request_id}/approve").json["grant"]
    new = stored_grant(escrow, renewal["id"])
    assert before <= new.not_before <= datetime.now(UTC)
    assert renewal["state"] == "active"
    assert new.expires_at - new.not_before == timedelta(days=14)  # the policy's default


def test_a_longer_renewal_is_clamped_to_the_policys_longest(escrow, granted, researcher,
                                                            reviewer):
    asked = renew(researcher, granted["id"], days=90).json["request"]
    assert asked["decision"]["clamped"] is True and asked["decision"]["grant_days"] == 30
    renewal = reviewer.post(f"/api/v1/requests/{asked['id']}/approve").json["grant"]
    new = stored_grant(escrow, renewal["id"])
    assert new.expires_at - new.not_before == timedelta(days=30)


def test_an_auto_approving_policy_renews_at_once(lab, researcher, reviewer, escrow, events):
    lab.deposit(WEIGHTS, model=QUICK, version="1")
    first = granted_for(researcher, reviewer, model=QUICK)
    made = renew(researcher, first["id"], days=30)
    assert made.status_code == 201, made.json
    assert made.json["request"]["state"] == "approved"
    renewal = made.json["grant"]
    assert renewal["key_id"] == first["key_id"] and renewal["releases_per_file"] == 1
    old, new = stored_grant(escrow, first["id"]), stored_grant(escrow, renewal["id"])
    assert new.not_before == old.expires_at
    assert new.expires_at - new.not_before == timedelta(days=10)  # clamped to the max
    assert [e["subject"]["grant"] for e in events("grant.created")] == [first["id"],
                                                                         renewal["id"]]


def test_each_grant_counts_its_own_key_releases(escrow, granted, researcher, reviewer):
    url = "/api/v1/grants/{}/files/0/release"
    for _ in range(2):
        assert researcher.post(url.format(granted["id"])).status_code == 200
    assert researcher.post(url.format(granted["id"])).status_code == 403  # its limit reached
    request_id = renew(researcher, granted["id"]).json["request"]["id"]
    renewal = reviewer.post(f"/api/v1/requests/{request_id}/approve").json["grant"]
    assert researcher.post(url.format(renewal["id"])).status_code == 403  # not valid yet
    now = datetime.now(UTC)
    set_grant(escrow, granted["id"], expires_at=now)
    set_grant(escrow, renewal["id"], not_before=now)
    released = researcher.post(url.format(renewal["id"]))
    assert released.status_code == 200, released.json
    assert released.json["releases_left"] == 1


# --- refusals -------------------------------------------------------------------------------


def test_a_policy_without_renewal_refuses_and_names_the_policy(sealed, researcher, reviewer,
                                                               events):
    request_id = researcher.ask().json["request"]["id"]
    grant = reviewer.post(f"/api/v1/requests/{request_id}/approve").json["grant"]
    refused = renew(researcher, grant["id"])
    assert refused.status_code == 403
    assert refused.json["title"] == "renewal refused"
    assert "policy acme-ai of acme-ai/gpt-small does not allow renewal" in refused.json["detail"]
    assert "escrow request acme-ai/gpt-small@2024-05" in refused.json["hint"]
    assert [r["id"] for r in researcher.get("/api/v1/requests").json["requests"]] == [request_id]
    assert len(events("request.created")) == 1


def test_the_policy_as_it_is_now_decides(granted, researcher, policy_dir):
    path = policy_dir / "acme-ai-renewable.yaml"
    path.write_text(RENEWABLE_POLICY.replace("renewal: true", "renewal: false"))
    refused = renew(researcher, granted["id"])
    assert refused.status_code == 403
    assert "policy acme-ai-renewable" in refused.json["detail"]


def test_a_researcher_no_longer_eligible_is_refused_and_recorded(granted, researcher,
                                                                  policy_dir, events):
    path = policy_dir / "acme-ai-renewable.yaml"
    path.write_text(RENEWABLE_POLICY + "require_post_quantum_key: true\n")
    refused = renew(researcher, granted["id"])
    assert refused.status_code == 422
    assert refused.json["title"] == "request refused"
    assert f"renewal {refused.json['request_id']} of grant {granted['id']}" in \
        refused.json["detail"]
    assert "post-quantum" in " ".join(refused.json["decision"]["missing"])
    shown = researcher.get(f"/api/v1/requests/{refused.json['request_id']}").json
    assert (shown["state"], shown["renews_grant_id"]) == ("denied", granted["id"])
    assert events("request.created")[-1]["details"]["state"] == "denied"


def test_a_revoked_grant_cannot_be_renewed(granted, researcher, reviewer):
    assert reviewer.post(f"/api/v1/grants/{granted['id']}/revoke").status_code == 200
    refused = renew(researcher, granted["id"])
    assert refused.status_code == 409
    assert f"grant {granted['id']} was revoked at" in refused.json["detail"]
    assert "escrow request" in refused.json["hint"]


def test_an_expired_grant_cannot_be_renewed(escrow, granted, researcher):
    set_grant(escrow, granted["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    refused = renew(researcher, granted["id"])
    assert refused.status_code == 409
    assert f"grant {granted['id']} expired at" in refused.json["detail"]
    assert "escrow request" in refused.json["hint"]


def test_a_second_pending_renewal_of_a_grant_is_a_conflict(granted, researcher):
    first = renew(researcher, granted["id"]).json["request"]["id"]
    again = renew(researcher, granted["id"])
    assert again.status_code == 409
    assert f"a renewal of grant {granted['id']} is pending already: request {first}" in \
        again.json["detail"]
    assert f"escrow requests withdraw {first}" in again.json["hint"]


def test_a_withdrawn_renewal_may_be_asked_again(granted, researcher):
    first = renew(researcher, granted["id"]).json["request"]["id"]
    assert researcher.post(f"/api/v1/requests/{first}/withdraw").status_code == 200
    assert renew(researcher, granted["id"]).status_code == 201


def test_a_pending_renewal_holds_back_a_second_request_for_the_deposit(granted, researcher):
    renewal_id = renew(researcher, granted["id"]).json["request"]["id"]
    again = researcher.ask(model=RENEWABLE, version="1")
    assert again.status_code == 409
    assert f"pending request {renewal_id}" in again.json["detail"]
    assert f"a renewal of grant {granted['id']}" in again.json["detail"]


def test_a_grant_is_renewed_once_then_its_renewal_is(escrow, granted, researcher, reviewer):
    request_id = renew(researcher, granted["id"]).json["request"]["id"]
    renewal = reviewer.post(f"/api/v1/requests/{request_id}/approve").json["grant"]
    twice = renew(researcher, granted["id"])
    assert twice.status_code == 409
    assert f"was renewed already: grant {renewal['id']}" in twice.json["detail"]
    early = renew(researcher, renewal["id"])
    assert early.status_code == 409
    assert "is not active yet" in early.json["detail"]
    set_grant(escrow, granted["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    set_grant(escrow, renewal["id"], not_before=datetime.now(UTC) - timedelta(seconds=1))
    assert renew(researcher, renewal["id"]).status_code == 201


def test_a_grant_revoked_while_its_renewal_waits_is_not_continued(granted, researcher,
                                                                   reviewer, events):
    request_id = renew(researcher, granted["id"]).json["request"]["id"]
    assert reviewer.post(f"/api/v1/grants/{granted['id']}/revoke").status_code == 200
    refused = reviewer.post(f"/api/v1/requests/{request_id}/approve")
    assert refused.status_code == 409
    assert "was revoked at" in refused.json["detail"]
    assert f"escrow review deny {request_id}" in refused.json["hint"]
    assert events("review.approved") and len(events("grant.created")) == 1  # the first only
    denied = reviewer.post(f"/api/v1/requests/{request_id}/deny")
    assert denied.status_code == 200 and denied.json["request"]["state"] == "denied"


def test_a_renewal_keeps_the_key_so_a_retired_key_is_refused(granted, researcher):
    retired = researcher.client.delete(f"/api/v1/me/keys/{granted['key_id']}",
                                       headers=researcher.auth)
    assert retired.status_code == 200, retired.json
    researcher.add_key()
    refused = renew(researcher, granted["id"])
    assert refused.status_code == 409
    assert f"its key {granted['key_id']} has been retired" in refused.json["detail"]


def test_only_the_grants_researcher_renews_it(granted, person, reviewer, lab):
    mallory = person("mallory@uni.example")
    mallory.add_key()
    mallory.sign_nda()
    for other in (mallory, reviewer):
        refused = renew(other, granted["id"])
        assert refused.status_code == 404  # as for every route of someone else's grant
        assert "does not exist or is not yours" in refused.json["detail"]
    assert lab.post(f"/api/v1/grants/{granted['id']}/renew").status_code == 401


def test_renewing_a_grant_that_does_not_exist_is_not_found(granted, researcher):
    assert renew(researcher, "gr_" + "0" * 16).status_code == 404


@pytest.mark.parametrize("body, word", [({"days": 0}, "days"), ({"purpose": " "}, "purpose"),
                                        ({"days": "7"}, "days")])
def test_bad_renewal_bodies_are_refused_with_a_reason(granted, researcher, body, word):
    refused = renew(researcher, granted["id"], **body)
    assert refused.status_code == 422
    assert word in refused.json["detail"]


# --- revocation -----------------------------------------------------------------------------


def test_revoking_a_grant_revokes_the_renewal_that_continues_it(granted, researcher, reviewer,
                                                                events):
    request_id = renew(researcher, granted["id"]).json["request"]["id"]
    renewal = reviewer.post(f"/api/v1/requests/{request_id}/approve").json["grant"]
    revoked = reviewer.post(f"/api/v1/grants/{granted['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json["state"] == "revoked"
    states = {g["id"]: g["state"] for g in researcher.get("/api/v1/grants").json["grants"]}
    assert states == {granted["id"]: "revoked", renewal["id"]: "revoked"}
    logged = events("grant.revoked")
    assert [e["subject"]["grant"] for e in logged] == [granted["id"], renewal["id"]]
    assert logged[1]["details"]["with"] == granted["id"]
    assert "with" not in logged[0]["details"]


def test_revoking_a_renewal_leaves_the_grant_it_continues(granted, researcher, reviewer):
    request_id = renew(researcher, granted["id"]).json["request"]["id"]
    renewal = reviewer.post(f"/api/v1/requests/{request_id}/approve").json["grant"]
    assert reviewer.post(f"/api/v1/grants/{renewal['id']}/revoke").status_code == 200
    states = {g["id"]: g["state"] for g in researcher.get("/api/v1/grants").json["grants"]}
    assert states == {granted["id"]: "active", renewal["id"]: "revoked"}
    assert renew(researcher, granted["id"]).status_code == 201  # as after a denial
