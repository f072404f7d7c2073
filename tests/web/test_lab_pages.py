"""The lab's pages: the review queue with the researcher's verified facts, decisions, grants and
revocation, deposits, members; each refused, with the role named, to those without it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from broker.adapters.db.models import AccessRequest, Grant, Membership

REQUEST_PAGE = "/request/acme-ai/gpt-small/2024-05"


def rows(escrow, model) -> list:
    """The table's rows, loaded and detached (readable after the transaction ends)."""
    with escrow.uow() as uow:
        found = list(uow.session.scalars(select(model)))
        uow.session.expunge_all()
        return found


@pytest.fixture
def pending(researcher, escrow, sealed) -> str:
    """Rosa's pending request for acme-ai/gpt-small@2024-05."""
    made = researcher.post(REQUEST_PAGE, {"purpose": "sycophancy interpretability study"})
    assert made.status_code == 303
    (request,) = rows(escrow, AccessRequest)
    return request.id


@pytest.fixture
def granted(pending, reviewer, escrow) -> str:
    reviewer.post(f"/lab/requests/{pending}/decide", {"decision": "approve"})
    (grant,) = rows(escrow, Grant)
    return grant.id


# --- who may open what ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/lab", "/lab/reviews", "/lab/acme-ai/grants",
                                  "/lab/acme-ai/deposits", "/lab/acme-ai/members"])
def test_a_researcher_without_a_lab_role_gets_a_page_naming_the_role(visitor, path):
    response = visitor("rosa@uni.example").get(path)
    assert response.status_code == 403
    text = response.get_data(as_text=True)
    assert "Access denied" in text
    assert 'id="needed-role">the role ' in text
    assert "Traceback" not in text


def test_the_403_page_names_the_exact_role_and_organisation(visitor):
    text = visitor("olaf@other.example", org_roles=(("other-lab", "admin"),)).get(
        "/lab/acme-ai/members").get_data(as_text=True)
    assert "the role admin in organisation acme-ai (or the global role operator)" in text


def test_a_reviewer_may_not_manage_members(reviewer):
    response = reviewer.get("/lab/acme-ai/members")
    assert response.status_code == 403
    assert "the role admin in organisation acme-ai" in response.get_data(as_text=True)


def test_the_lab_overview_links_the_sections_a_role_opens(reviewer, visitor):
    page = reviewer.page("/lab")
    assert 'href="/lab/reviews"' in page and 'href="/lab/acme-ai/grants"' in page
    assert 'href="/lab/acme-ai/members"' not in page
    admin = visitor("ada@acme.example", org_roles=(("acme-ai", "admin"),))
    assert 'href="/lab/acme-ai/members"' in admin.page("/lab")


# --- the review queue -------------------------------------------------------------------------


def test_the_queue_shows_the_researchers_verified_facts(reviewer, pending):
    page = reviewer.page("/lab/reviews")
    assert pending in page
    assert "Rosa Franklin" in page
    assert "rosa@uni.example" in page and "verified" in page
    assert "https://idp.uni.example" in page  # the issuer
    assert "acme-research-nda version 1" in page  # the NDA signed, and when:
    assert page.count("<time") >= 2
    assert "sycophancy interpretability study" in page


def test_approving_makes_the_grant_the_researcher_sees(reviewer, researcher, pending, escrow):
    decided = reviewer.post(f"/lab/requests/{pending}/decide",
                            {"decision": "approve", "comment": "fine for this study"})
    assert decided.status_code == 303
    assert "now <strong>approved</strong>" in reviewer.page(decided.headers["Location"])
    (grant,) = rows(escrow, Grant)
    mine = researcher.page("/requests")
    assert grant.id in mine and "14 days left" in mine
    assert "fine for this study" in mine


def test_denying_closes_the_request(reviewer, pending, escrow):
    reviewer.post(f"/lab/requests/{pending}/decide", {"decision": "deny", "comment": "no"})
    assert rows(escrow, AccessRequest)[0].state == "denied"
    assert rows(escrow, Grant) == []
    assert pending not in reviewer.page("/lab/reviews")


def test_a_decision_without_the_csrf_token_is_refused_and_changes_nothing(
    reviewer, pending, escrow
):
    refused = reviewer.post(f"/lab/requests/{pending}/decide", {"decision": "approve"},
                            csrf=False)
    assert refused.status_code == 403
    assert rows(escrow, AccessRequest)[0].state == "pending"


def test_a_researcher_cannot_approve_even_by_posting_the_form(researcher, pending, escrow):
    refused = researcher.post(f"/lab/requests/{pending}/decide", {"decision": "approve"})
    assert refused.status_code == 403
    assert rows(escrow, AccessRequest)[0].state == "pending"


# --- grants -------------------------------------------------------------------------------------


def test_a_reviewer_revokes_a_grant_from_the_grants_page(reviewer, granted, escrow):
    page = reviewer.page("/lab/acme-ai/grants")
    assert granted in page and "rosa@uni.example" in page
    assert f'action="/lab/grants/{granted}/revoke"' in page
    revoked = reviewer.post(f"/lab/grants/{granted}/revoke")
    assert revoked.status_code == 303
    assert rows(escrow, Grant)[0].revoked_at is not None
    assert f"Grant <code>{granted}</code> is revoked" in reviewer.page(
        revoked.headers["Location"])


def test_a_reviewer_of_another_organisation_cannot_revoke(visitor, granted, escrow):
    other = visitor("otto@other.example", org_roles=(("other-lab", "reviewer"),))
    assert other.get("/lab/acme-ai/grants").status_code == 403
    assert other.post(f"/lab/grants/{granted}/revoke").status_code == 403
    assert rows(escrow, Grant)[0].revoked_at is None


def test_revoking_without_the_csrf_token_is_refused(reviewer, granted, escrow):
    assert reviewer.post(f"/lab/grants/{granted}/revoke", csrf=False).status_code == 403
    assert rows(escrow, Grant)[0].revoked_at is None


# --- deposits and members -----------------------------------------------------------------------


def test_the_deposits_page_shows_the_verification_state(reviewer, sealed):
    page = reviewer.page("/lab/acme-ai/deposits")
    assert sealed["deposit_id"] in page
    assert ">sealed</span>" in page
    assert "2 of 2 files verified" in page


def test_an_admin_grants_and_takes_away_a_role(visitor, escrow):
    admin = visitor("ada@acme.example", org_roles=(("acme-ai", "admin"),))
    newcomer = visitor("dee@acme.example", "Dee Depositor")
    page = admin.page("/lab/acme-ai/members")
    assert "ada@acme.example" in page and 'for="user"' in page
    granted = admin.post("/lab/acme-ai/members",
                         {"action": "grant", "user": "dee@acme.example", "role": "depositor"})
    assert granted.status_code == 303
    roles = {(m.user_id, m.role) for m in rows(escrow, Membership)}
    assert (newcomer.login.user_id, "depositor") in roles
    admin.post("/lab/acme-ai/members", {"action": "revoke",
                                        "user": str(newcomer.login.user_id), "role": "depositor"})
    roles = {(m.user_id, m.role) for m in rows(escrow, Membership)}
    assert (newcomer.login.user_id, "depositor") not in roles


def test_a_role_change_without_the_csrf_token_is_refused(visitor, escrow):
    admin = visitor("ada@acme.example", org_roles=(("acme-ai", "admin"),))
    visitor("dee@acme.example")
    refused = admin.post("/lab/acme-ai/members", {"action": "grant", "user": "dee@acme.example",
                                                  "role": "admin"}, csrf=False)
    assert refused.status_code == 403
    assert len(rows(escrow, Membership)) == 1
