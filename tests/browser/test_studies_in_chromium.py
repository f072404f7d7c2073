"""Studies of live use in Chromium (issue 19): the model's lab admin approves a proposed study
on the lab's page, with a note; a person finds it from their page, reads what it captures,
consents with the button, sees the consent in force on /me and withdraws it there with the
button; a study's owner adds and removes a member and closes the study on its page. (Every
case and refusal, on both databases: tests/web/test_study_pages.py.)"""

from __future__ import annotations

import re

import pytest
from browser_support import follow_login_link, login_link
from web.seed import deposit, depositor_token, make_login

from broker import age


@pytest.fixture
def proposed(escrow, app) -> str:
    """A study of acme-ai/gpt-small proposed by Rosa from her terminal: its id."""
    client = app.test_client()
    deposit(client, escrow, depositor_token(escrow))
    rosa = make_login(escrow, "rosa@uni.example", "Rosa Franklin")
    made = client.post("/api/v1/studies", headers=rosa.auth, json={
        "model": "acme-ai/gpt-small", "name": "tutoring", "title": "Tutoring over a year",
        "purpose": "how people ask a retired model for help, over time",
        "recipients": [str(age.generate_x25519_identity().to_recipient())]})
    assert made.status_code == 201, made.json
    return made.json["id"]


def test_the_lab_approves_and_a_person_consents_and_withdraws_by_clicking(tab, escrow,
                                                                          proposed):
    ada = tab()
    follow_login_link(ada, login_link(escrow, "ada@acme.example", "Ada Admin",
                                      org_roles=(("acme-ai", "admin"),)))
    ada.follow("Lab")
    ada.follow("Studies")
    page = ada.page
    card = page.locator(f"#study-{proposed}")
    assert "proposed" in card.inner_text() and "Rosa Franklin" in card.inner_text()
    ada.shot("lab-studies-proposed")
    card.get_by_label("Note").fill("fine by us")
    card.get_by_role("button", name="Approve").click()
    page.wait_for_url(re.compile(r".*/lab/acme-ai/studies\?decided="))
    assert "is now approved" in page.get_by_role("status").inner_text()
    assert "fine by us" in page.locator(f"#study-{proposed}").inner_text()
    assert page.locator(f"#study-{proposed} button").count() == 0

    pat = tab()
    follow_login_link(pat, login_link(escrow, "pat@uni.example", "Pat Doe"))
    pat.follow("Studies you may join")
    page = pat.page
    card = page.locator(f"#study-{proposed}")
    text = card.inner_text()
    for fact in ("Tutoring over a year", "acme-ai/gpt-small", "Rosa Franklin",
                 "how people ask a retired model for help, over time"):
        assert fact in text, (fact, text)
    captured = page.locator("#what-is-captured").inner_text()
    for fact in ("The request and the answer text", "Encrypted to the team", "Pseudonymous",
                 "Withdraw any time"):
        assert fact in captured, fact
    pat.shot("studies")
    card.get_by_role("button", name="Consent").click()
    page.wait_for_url(re.compile(r".*/studies\?consented=tutoring"))
    assert "You consent to study Tutoring over a year" in page.get_by_role(
        "status").inner_text()
    assert "you consent" in page.locator(f"#study-{proposed} .badge").inner_text()
    pat.shot("studies-consented")

    pat.follow("your page")
    row = page.locator("#consents tbody tr").first
    assert "tutoring" in row.inner_text() and "in force" in row.inner_text()
    row.get_by_role("button", name="Withdraw").click()
    page.wait_for_url(re.compile(r".*/me\?withdrawn="))
    assert "You withdrew from study tutoring" in page.get_by_role("status").inner_text()
    row = page.locator("#consents tbody tr").first
    assert "withdrawn" in row.inner_text() and row.locator("button").count() == 0
    pat.shot("me-study-withdrawn")
    assert ada.errors == [] and pat.errors == []


def test_the_owner_adds_and_removes_a_member_and_closes_the_study_by_clicking(tab, escrow,
                                                                             proposed):
    make_login(escrow, "sam@uni.example", "Sam Team")
    rosa = tab()
    follow_login_link(rosa, login_link(escrow, "rosa@uni.example", "Rosa Franklin"))
    page = rosa.open(f"/studies/{proposed}")
    assert "proposed" in page.locator("h1").inner_text()
    assert "No members besides the owner" in page.locator("#team").inner_text()
    page.get_by_label("Email of the person to add").fill("sam@uni.example")
    page.get_by_role("button", name="Add").click()
    page.wait_for_url(re.compile(r".*/studies/st_\w+\?added=\d+"))
    assert "Sam Team is in the team now" in page.get_by_role("status").inner_text()
    rosa.shot("study-team")
    page.locator("#team tbody tr").first.get_by_role("button", name="Remove").click()
    page.wait_for_url(re.compile(r".*/studies/st_\w+\?removed=\d+"))
    assert "is no longer in the team" in page.get_by_role("status").inner_text()
    assert "No members besides the owner" in page.locator("#team").inner_text()
    page.get_by_role("button", name="Close").click()
    page.wait_for_url(re.compile(r".*/studies/st_\w+\?closed=1"))
    assert "is closed" in page.get_by_role("status").inner_text()
    assert "closed" in page.locator("h1").inner_text()
    assert page.locator("#close").count() == 0
    rosa.shot("study-closed")
    assert rosa.errors == []
