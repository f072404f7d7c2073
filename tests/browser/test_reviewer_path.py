"""A lab reviewer in Chromium: the review queue with the researcher's facts, an approval, the
researcher's grant with its time left and fetch command, and a revocation. Also the pages a
reviewer may not open, and the operator's page."""

from __future__ import annotations

import re

import pytest
from browser_support import follow_login_link, login_link
from web.seed import add_proven_key, deposit, depositor_token, make_login, sign_nda


@pytest.fixture
def pending(escrow, app) -> str:
    """A sealed deposit and Rosa's pending request for it (made from her terminal)."""
    client = app.test_client()
    deposit(client, escrow, depositor_token(escrow))
    rosa = make_login(escrow, "rosa@uni.example", "Rosa Franklin")
    add_proven_key(client, rosa.auth)
    sign_nda(client, rosa.auth, "Rosa Franklin")
    made = client.post("/api/v1/requests", headers=rosa.auth, json={
        "model": "acme-ai/gpt-small", "version": "2024-05", "days": 12,
        "purpose": "sycophancy interpretability study"})
    assert made.status_code == 201, made.json
    return made.json["request"]["id"]


def test_a_reviewer_approves_and_then_revokes(tab, escrow, pending):
    reviewer = tab()
    follow_login_link(reviewer, login_link(escrow, "rita@acme.example", "Rita Reviewer",
                                           org_roles=(("acme-ai", "reviewer"),)))
    page = reviewer.page
    reviewer.follow("Lab")
    reviewer.shot("lab")
    reviewer.follow("Review queue")
    card = page.locator(f"#{pending}")
    for fact in ("Rosa Franklin", "rosa@uni.example", "verified", "acme-research-nda version 1",
                 "sycophancy interpretability study"):
        assert fact in card.inner_text()
    reviewer.shot("reviews")
    card.get_by_label("Comment").fill("Fine for the stated study.")
    card.get_by_role("button", name="Approve").click()
    assert "now approved" in page.get_by_role("status").inner_text()
    assert "No request is waiting" in page.locator("main").inner_text()

    researcher = tab()
    follow_login_link(researcher, login_link(escrow, "rosa@uni.example", "Rosa Franklin"))
    researcher.follow("My access")
    grant = researcher.page.locator("section.card").first
    assert "12 days left" in grant.locator(".time-left").inner_text()
    command = grant.locator(".fetch-command").inner_text().replace(" \\\n    ", " ")
    assert re.fullmatch(r"escrow fetch acme-ai/gpt-small@2024-05 --grant gr_\w+ --identity "
                        r"key\.txt --out \./gpt-small-2024-05 --broker http://127\.0\.0\.1:\d+",
                        command)
    researcher.shot("my-grants")

    reviewer.open("/lab/acme-ai/grants")
    row = page.locator("tbody tr").first
    assert "active" in row.inner_text()
    reviewer.shot("lab-grants")
    row.get_by_role("button", name="Revoke").click()
    assert "is revoked" in page.get_by_role("status").inner_text()
    assert "revoked" in page.locator("tbody tr").first.locator(".badge").inner_text()

    researcher.page.reload()
    assert "revoked" in researcher.page.locator("section.card .badge").first.inner_text()
    assert reviewer.errors == [] and researcher.errors == []


def test_a_reviewer_sees_deposits_and_is_told_which_role_members_need(tab, escrow, pending):
    reviewer = tab()
    follow_login_link(reviewer, login_link(escrow, "rita@acme.example", "Rita Reviewer",
                                           org_roles=(("acme-ai", "reviewer"),)))
    page = reviewer.open("/lab/acme-ai/deposits")
    assert "sealed" in page.locator("tbody tr").first.inner_text()
    reviewer.shot("lab-deposits")
    response = page.goto(reviewer.base + "/lab/acme-ai/members")
    assert response.status == 403
    assert page.locator("#needed-role").inner_text() == (
        "the role admin in organisation acme-ai (or the global role operator)")
    reviewer.shot("forbidden")


def test_an_admin_manages_members(tab, escrow, pending):
    admin = tab()
    follow_login_link(admin, login_link(escrow, "ada@acme.example", "Ada Admin",
                                        org_roles=(("acme-ai", "admin"),)))
    make_login(escrow, "dee@acme.example", "Dee Depositor")
    page = admin.open("/lab/acme-ai/members")
    page.get_by_label("Person").fill("dee@acme.example")
    page.get_by_label("Role").select_option("depositor")
    page.get_by_role("button", name="Grant the role").click()
    assert "granted" in page.get_by_role("status").inner_text()
    assert "dee@acme.example" in page.locator("tbody").inner_text()
    admin.shot("lab-members")
    assert admin.errors == []


def test_the_operator_sees_health_and_verifications(tab, escrow, app):
    deposit(app.test_client(), escrow, depositor_token(escrow), seal=False)
    operator = tab()
    follow_login_link(operator, login_link(escrow, "otto@escrow.example", "Otto Operator",
                                           global_roles=("operator",)))
    page = operator.open("/operator")
    assert page.locator("tbody").first.inner_text().count("working") == 3
    assert "verifying" in page.locator("#verifications ~ table").first.inner_text()
    operator.shot("operator")
    assert operator.errors == []
