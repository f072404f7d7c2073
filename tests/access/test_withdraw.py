"""A researcher withdraws their own pending request, through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest


def withdraw(actor, request_id: str):
    return actor.post(f"/api/v1/requests/{request_id}/withdraw")


def test_a_pending_request_is_withdrawn_and_leaves_the_review_queue(sealed, researcher,
                                                                     reviewer, events):
    request_id = researcher.ask().json["request"]["id"]
    withdrawn = withdraw(researcher, request_id)
    assert withdrawn.status_code == 200, withdrawn.json
    assert withdrawn.json["request"]["state"] == "withdrawn"
    assert withdrawn.json["request"]["decided_at"]
    assert "grant" not in withdrawn.json
    assert reviewer.get("/api/v1/reviews").json["requests"] == []
    mine = researcher.get("/api/v1/requests").json["requests"]
    assert [(r["id"], r["state"]) for r in mine] == [(request_id, "withdrawn")]  # on the record
    [logged] = events("request.withdrawn")
    assert logged["subject"]["request"] == request_id
    assert logged["subject"]["user"] == researcher.user_id
    assert logged["actor"] == {"kind": "user", "id": researcher.user_id}
    assert "rosa@uni.example" not in str(logged)


def test_after_withdrawing_the_researcher_may_ask_again(sealed, researcher):
    request_id = researcher.ask().json["request"]["id"]
    assert withdraw(researcher, request_id).status_code == 200
    again = researcher.ask()
    assert again.status_code == 201 and again.json["request"]["id"] != request_id


def test_withdrawing_twice_is_a_conflict(sealed, researcher, events):
    request_id = researcher.ask().json["request"]["id"]
    assert withdraw(researcher, request_id).status_code == 200
    again = withdraw(researcher, request_id)
    assert again.status_code == 409
    assert f"request {request_id} was withdrawn already" in again.json["detail"]
    assert "new request" in again.json["hint"]
    assert len(events("request.withdrawn")) == 1


def test_an_approved_request_cannot_be_withdrawn_and_the_hint_says_what_to_do(
        sealed, researcher, reviewer, events):
    request_id = researcher.ask().json["request"]["id"]
    grant = reviewer.post(f"/api/v1/requests/{request_id}/approve").json["grant"]
    refused = withdraw(researcher, request_id)
    assert refused.status_code == 409
    assert f"request {request_id} was approved at" in refused.json["detail"]
    assert "only a pending request can be withdrawn" in refused.json["detail"]
    assert grant["id"] in refused.json["hint"] and "revoke" in refused.json["hint"]
    assert researcher.get("/api/v1/grants").json["grants"][0]["state"] == "active"
    assert events("request.withdrawn") == []


def test_a_denied_request_cannot_be_withdrawn(sealed, researcher, reviewer):
    request_id = researcher.ask().json["request"]["id"]
    assert reviewer.post(f"/api/v1/requests/{request_id}/deny").status_code == 200
    refused = withdraw(researcher, request_id)
    assert refused.status_code == 409
    assert "was denied at" in refused.json["detail"]


def test_a_request_refused_when_asked_is_closed_already(sealed, person):
    newcomer = person("nina@uni.example")
    request_id = newcomer.ask().json["request_id"]  # recorded as denied: no NDA, no key
    assert withdraw(newcomer, request_id).status_code == 409


def test_nobody_else_withdraws_a_request(sealed, researcher, person):
    request_id = researcher.ask().json["request"]["id"]
    other = person("otto@uni.example")
    refused = withdraw(other, request_id)
    assert refused.status_code == 403  # as reading it is: GET /requests/<id> answers 403 too
    assert "not yours" in refused.json["detail"]
    assert researcher.get(f"/api/v1/requests/{request_id}").json["state"] == "pending"


def test_a_reviewer_denies_rather_than_withdraws(sealed, researcher, reviewer):
    request_id = researcher.ask().json["request"]["id"]
    refused = withdraw(reviewer, request_id)
    assert refused.status_code == 403
    assert "escrow review deny" in refused.json["hint"]


def test_a_withdrawn_request_cannot_be_approved_or_denied(sealed, researcher, reviewer, events):
    request_id = researcher.ask().json["request"]["id"]
    assert withdraw(researcher, request_id).status_code == 200
    for verb in ("approve", "deny"):
        refused = reviewer.post(f"/api/v1/requests/{request_id}/{verb}")
        assert refused.status_code == 409
        assert "withdrawn by its researcher" in refused.json["detail"]
    assert researcher.get("/api/v1/grants").json["grants"] == []
    assert events("review.approved") == [] and events("grant.created") == []


def test_withdrawing_a_request_that_does_not_exist_is_not_found(sealed, researcher):
    missing = withdraw(researcher, "rq_" + "0" * 16)
    assert missing.status_code == 404
    assert "does not exist" in missing.json["detail"]


def test_a_service_token_cannot_withdraw(sealed, researcher, lab):
    request_id = researcher.ask().json["request"]["id"]
    assert lab.post(f"/api/v1/requests/{request_id}/withdraw").status_code == 401


def test_without_its_audit_event_the_withdrawal_does_not_happen(sealed, researcher, escrow,
                                                                 monkeypatch):
    from broker.adapters.db.uow import UnitOfWork
    from broker.domain.principals import Principal
    from broker.errors import Unavailable
    from broker.services import access

    request_id = researcher.ask().json["request"]["id"]

    def failing_audit(self, action, *args, **kwargs):
        raise Unavailable(f"audit log: could not record {action!r}")

    with monkeypatch.context() as patched:
        patched.setattr(UnitOfWork, "audit", failing_audit)
        with escrow.uow() as uow, pytest.raises(Unavailable):
            access.withdraw(uow, Principal(kind="user", id=researcher.user_id), request_id)
    assert researcher.get(f"/api/v1/requests/{request_id}").json["state"] == "pending"
