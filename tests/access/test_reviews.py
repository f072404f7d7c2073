"""Reviews that cannot trap a request (issue 15): an admin's review counts where the policy asks
for reviewers; a review that could not count is refused up front, naming who can give one; a
reviewer may change their review while the request is pending. On SQLite and PostgreSQL."""

from __future__ import annotations

from access_support import POLICY


def test_an_admin_approves_under_a_policy_that_asks_for_a_reviewer(sealed, researcher, person,
                                                                   events):
    # the README's bootstrap: Ada is granted `admin` of acme-ai, then approves
    ada = person("ada@acme.example", (("acme-ai", "admin"),))
    request_id = researcher.ask().json["request"]["id"]
    decided = ada.post(f"/api/v1/requests/{request_id}/approve", {"comment": "ok"})
    assert decided.status_code == 200, decided.json
    assert decided.json["request"]["state"] == "approved"
    assert decided.json["grant"]["state"] == "active"
    assert [e["subject"]["request"] for e in events("review.approved")] == [request_id]


def test_a_review_that_cannot_count_is_refused_up_front_naming_who_can_give_it(
        sealed, person, events):
    rosa = person("rosa@uni.example", (("uni-lab", "depositor"),))
    rosa.add_key()
    rosa.sign_nda()
    # a reviewer of acme-ai who is also Rosa's colleague at uni-lab: the policy wants outsiders
    colleague = person("carl@uni.example", (("acme-ai", "reviewer"), ("uni-lab", "reviewer")))
    person("rob@acme.example", (("acme-ai", "reviewer"),))
    person("amy@acme.example", (("acme-ai", "admin"),))
    person("dora@acme.example", (("acme-ai", "depositor"),))  # cannot review at all
    request_id = rosa.ask().json["request"]["id"]

    for verb in ("approve", "deny"):
        refused = colleague.post(f"/api/v1/requests/{request_id}/{verb}")
        assert refused.status_code == 403, refused.json
        assert "would not count under policy acme-ai" in refused.json["detail"]
        assert "you are a member of your own organisation (uni-lab)" in refused.json["detail"]
        hint = refused.json["hint"]
        assert "reviewer (or admin) of acme-ai outside the researcher's organisations" in hint
        assert "amy@acme.example" in hint and "rob@acme.example" in hint
        assert "carl@" not in hint and "dora@" not in hint and "rosa@" not in hint
    # nothing was recorded: the request is pending, no review on it, nothing on the log
    mine = rosa.get("/api/v1/requests").json["requests"]
    assert [(r["id"], r["state"]) for r in mine] == [(request_id, "pending")]
    assert events("review.approved") == events("review.denied") == []


def test_with_nobody_qualified_the_refusal_says_how_to_grant_the_role(sealed, person):
    rosa = person("rosa@uni.example", (("uni-lab", "depositor"),))
    rosa.add_key()
    rosa.sign_nda()
    colleague = person("carl@uni.example", (("acme-ai", "admin"), ("uni-lab", "depositor")))
    request_id = rosa.ask().json["request"]["id"]
    refused = colleague.post(f"/api/v1/requests/{request_id}/approve")
    assert refused.status_code == 403
    assert "nobody holds that role yet" in refused.json["hint"]
    assert "escrow admin role grant USER reviewer --org acme-ai" in refused.json["hint"]


def test_a_reviewer_changes_their_review_while_the_request_is_pending(
        sealed, researcher, person, policy_dir, events):
    (policy_dir / "acme-ai.yaml").write_text(POLICY.replace("count: 1", "count: 2"))
    rita = person("rita@acme.example", (("acme-ai", "reviewer"),))
    request_id = researcher.ask().json["request"]["id"]

    first = rita.post(f"/api/v1/requests/{request_id}/approve", {"comment": "fine"})
    assert first.status_code == 200, first.json
    assert first.json["request"]["state"] == "pending"
    again = rita.post(f"/api/v1/requests/{request_id}/approve")
    assert again.status_code == 409
    assert f"you have approved request {request_id} already" in again.json["detail"]

    # on second thoughts: the newest review counts, and the change is on the log
    changed = rita.post(f"/api/v1/requests/{request_id}/deny", {"comment": "purpose unclear"})
    assert changed.status_code == 200, changed.json
    assert changed.json["request"]["state"] == "denied"
    reviews = rita.get(f"/api/v1/requests/{request_id}").json["reviews"]
    assert [(r["reviewer"], r["approve"], r["comment"]) for r in reviews] == [
        (rita.user_id, False, "purpose unclear")]
    denied = events("review.denied")
    assert [(e["subject"]["request"], e["details"]["changed_from"]) for e in denied] == [
        (request_id, "approved")]
    assert "changed_from" not in events("review.approved")[0]["details"]


def test_a_changed_approval_is_counted_once(sealed, researcher, person, policy_dir):
    (policy_dir / "acme-ai.yaml").write_text(POLICY.replace("count: 1", "count: 2"))
    rita = person("rita@acme.example", (("acme-ai", "reviewer"),))
    rob = person("rob@acme.example", (("acme-ai", "admin"),))
    request_id = researcher.ask().json["request"]["id"]
    assert rita.post(f"/api/v1/requests/{request_id}/approve").json["request"]["state"] == (
        "pending")
    done = rob.post(f"/api/v1/requests/{request_id}/approve")
    assert done.json["request"]["state"] == "approved"
    assert done.json["grant"]["state"] == "active"
