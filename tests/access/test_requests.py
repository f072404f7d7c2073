"""Requests and reviews through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from access_support import WEIGHTS


def test_a_request_for_a_missing_model_is_not_found(sealed, researcher):
    response = researcher.ask(model="acme-ai/no-such-model")
    assert response.status_code == 404
    assert "model acme-ai/no-such-model does not exist" in response.json["detail"]


def test_a_request_for_a_missing_version_is_not_found_and_names_the_versions(sealed, researcher):
    response = researcher.ask(version="1999-01")
    assert response.status_code == 404
    assert "version 1999-01 of acme-ai/gpt-small does not exist" in response.json["detail"]
    assert "2024-05" in response.json["hint"]


def test_an_unsealed_version_cannot_be_requested(lab, researcher):
    lab.deposit({"a": b"1"}, version="2025-01", seal=False)
    response = researcher.ask(version="2025-01")
    assert response.status_code == 404
    assert "is not sealed yet (verifying)" in response.json["detail"]


def test_a_model_no_policy_matches_cannot_be_requested(lab, researcher, escrow):
    from broker.domain.principals import OPERATOR
    from broker.services import admin

    with escrow.uow() as uow:
        admin.create_org(uow, OPERATOR, "other-lab")
    with escrow.uow() as uow:
        token = admin.create_token(uow, OPERATOR, "other-lab", "depositor", days=1).token
    other = type(lab)(client=lab.client, escrow=escrow, token=token)
    other.deposit({"a": b"1"}, model="other-lab/model")
    response = researcher.ask(model="other-lab/model")
    assert response.status_code == 422
    assert response.json["detail"] == (
        "no policy matches other-lab/model: nothing can be requested for it")


def test_without_nda_and_key_the_request_is_refused_with_what_is_missing_and_recorded(
        sealed, person, events):
    newcomer = person("nina@uni.example")
    response = newcomer.ask()
    assert response.status_code == 422
    body = response.json
    assert body["title"] == "request refused"
    missing = " ".join(body["decision"]["missing"]).lower()
    assert "nda" in missing and "key" in missing
    assert "recorded as denied" in body["detail"]
    mine = newcomer.get("/api/v1/requests").json["requests"]
    assert [(r["id"], r["state"]) for r in mine] == [(body["request_id"], "denied")]
    logged = events("request.created")[-1]
    assert logged["details"]["state"] == "denied"
    assert logged["details"]["policy_sha256"] == body["decision"]["policy"]["sha256"]
    assert logged["details"]["reasons"]
    assert "nina@uni.example" not in str(logged)


def test_explain_evaluates_without_recording(sealed, person):
    newcomer = person("nina@uni.example")
    response = newcomer.post("/api/v1/requests/explain",
                             {"model": "acme-ai/gpt-small", "version": "2024-05"})
    assert response.status_code == 200
    assert response.json["would_be"] == "denied"
    assert response.json["decision"]["missing"]
    assert newcomer.get("/api/v1/requests").json["requests"] == []


def test_a_longer_duration_is_clamped_and_said_so(sealed, researcher):
    response = researcher.ask(days=90)
    assert response.status_code == 201, response.json
    decision = response.json["request"]["decision"]
    assert decision["clamped"] is True and decision["grant_days"] == 30
    assert any("90" in reason and "30" in reason for reason in decision["reasons"])


def test_an_eligible_request_waits_for_a_reviewer(sealed, researcher, reviewer):
    made = researcher.ask()
    assert made.status_code == 201
    assert made.json["request"]["state"] == "pending"
    assert "grant" not in made.json
    queue = reviewer.get("/api/v1/reviews").json
    assert queue["orgs"] == ["acme-ai"]
    [shown] = queue["requests"]
    assert shown["id"] == made.json["request"]["id"]
    assert shown["purpose"] == "interpretability study"
    facts = shown["researcher"]
    assert facts["email"] == "rosa@uni.example" and facts["email_verified"] is True
    assert facts["issuer"]
    assert facts["ndas"][0]["nda"] == "acme-research-nda" and facts["ndas"][0]["signed_at"]
    assert facts["ndas"][0]["current_text"] is True


def test_asking_twice_while_pending_is_a_conflict(sealed, researcher):
    assert researcher.ask().status_code == 201
    again = researcher.ask()
    assert again.status_code == 409
    assert "pending request" in again.json["detail"]


def test_approval_makes_a_grant_pinned_to_the_researchers_key(sealed, researcher, reviewer,
                                                               events):
    request_id = researcher.ask(days=10).json["request"]["id"]
    decided = reviewer.post(f"/api/v1/requests/{request_id}/approve", {"comment": "ok"})
    assert decided.status_code == 200, decided.json
    assert decided.json["request"]["state"] == "approved"
    grant = decided.json["grant"]
    assert grant["key_id"] == researcher.keys[0]
    assert grant["state"] == "active"
    assert grant["releases_per_file"] == 2
    mine = researcher.get("/api/v1/grants").json["grants"]
    assert [g["id"] for g in mine] == [grant["id"]]
    assert [e["subject"]["request"] for e in events("review.approved")] == [request_id]
    created = events("grant.created")
    assert [e["subject"]["grant"] for e in created] == [grant["id"]]
    assert created[0]["details"]["policy_sha256"]


def test_the_grant_lasts_the_decided_days(sealed, researcher, reviewer):
    from datetime import datetime

    request_id = researcher.ask(days=10).json["request"]["id"]
    grant = reviewer.post(f"/api/v1/requests/{request_id}/approve").json["grant"]
    start = datetime.fromisoformat(grant["not_before"])
    end = datetime.fromisoformat(grant["expires_at"])
    assert round((end - start).total_seconds() / 86400) == 10


def test_a_denial_closes_the_request(sealed, researcher, reviewer, events):
    request_id = researcher.ask().json["request"]["id"]
    denied = reviewer.post(f"/api/v1/requests/{request_id}/deny", {"comment": "not now"})
    assert denied.status_code == 200
    assert denied.json["request"]["state"] == "denied"
    assert "grant" not in denied.json
    assert events("review.denied")[0]["subject"]["request"] == request_id
    again = reviewer.post(f"/api/v1/requests/{request_id}/approve")
    assert again.status_code == 409
    assert researcher.ask().status_code == 201  # a new request after a denial


def test_nobody_approves_their_own_request(sealed, person):
    both = person("rex@acme.example", (("acme-ai", "reviewer"),))
    both.add_key()
    both.sign_nda()
    request_id = both.ask().json["request"]["id"]
    response = both.post(f"/api/v1/requests/{request_id}/approve")
    assert response.status_code == 403
    assert "your own" in response.json["detail"]


def test_approving_twice_is_a_conflict(sealed, researcher, reviewer):
    request_id = researcher.ask().json["request"]["id"]
    assert reviewer.post(f"/api/v1/requests/{request_id}/approve").status_code == 200
    again = reviewer.post(f"/api/v1/requests/{request_id}/approve")
    assert again.status_code == 409
    assert "approved already" in again.json["detail"]


def test_a_reviewer_of_another_organisation_is_refused(sealed, researcher, person):
    outsider = person("olaf@other.example", (("other-lab", "reviewer"),))
    request_id = researcher.ask().json["request"]["id"]
    response = outsider.post(f"/api/v1/requests/{request_id}/approve")
    assert response.status_code == 403
    assert outsider.get("/api/v1/reviews").json["requests"] == []
    assert outsider.get(f"/api/v1/requests/{request_id}").status_code == 403


def test_a_researcher_sees_only_their_own_requests(sealed, researcher, person):
    request_id = researcher.ask().json["request"]["id"]
    other = person("otto@uni.example")
    assert other.get("/api/v1/requests").json["requests"] == []
    assert other.get(f"/api/v1/requests/{request_id}").status_code == 403
    mine = researcher.get(f"/api/v1/requests/{request_id}")
    assert mine.status_code == 200 and "researcher" not in mine.json


def test_an_auto_approving_policy_grants_at_once(lab, researcher, events):
    lab.deposit(WEIGHTS, model="acme-ai/auto-small", version="1")
    made = researcher.ask(model="acme-ai/auto-small", version="1", days=30)
    assert made.status_code == 201, made.json
    assert made.json["request"]["state"] == "approved"
    grant = made.json["grant"]
    assert grant["releases_per_file"] == 1 and grant["key_id"] == researcher.keys[0]
    assert made.json["request"]["decision"]["grant_days"] == 10  # clamped to the max
    assert [e["subject"]["grant"] for e in events("grant.created")] == [grant["id"]]


def test_a_request_may_name_the_key_to_pin(sealed, researcher, reviewer):
    second = researcher.add_key()
    request_id = researcher.ask(key_id=researcher.keys[0]).json["request"]["id"]
    grant = reviewer.post(f"/api/v1/requests/{request_id}/approve").json["grant"]
    assert grant["key_id"] == researcher.keys[0] != second


def test_without_a_named_key_the_newest_proven_key_is_pinned(sealed, researcher, reviewer):
    newest = researcher.add_key()
    request_id = researcher.ask().json["request"]["id"]
    grant = reviewer.post(f"/api/v1/requests/{request_id}/approve").json["grant"]
    assert grant["key_id"] == newest


@pytest.mark.parametrize("body, word", [
    ({"model": "acme-ai/gpt-small", "version": "2024-05"}, "purpose"),
    ({"model": "acme-ai/gpt-small", "version": "2024-05", "purpose": "x", "days": 0}, "days"),
    ({"model": "gpt-small", "version": "2024-05", "purpose": "x"}, "ORG/NAME"),
    ({"model": "acme-ai/gpt-small", "version": "2024-05", "purpose": "x", "key_id": "rk_x"},
     "key"),
])
def test_bad_request_bodies_are_refused_with_a_reason(sealed, researcher, body, word):
    response = researcher.post("/api/v1/requests", body)
    assert response.status_code == 422
    assert word in response.json["detail"]


def test_a_service_token_cannot_request(sealed, lab):
    response = lab.post("/api/v1/requests", {"model": "acme-ai/gpt-small", "version": "2024-05",
                                             "purpose": "x"})
    assert response.status_code == 401
