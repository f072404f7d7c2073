"""Hosted access in Chromium (issue 19): a person without any key of theirs sees their inference
grant on /me with its quotas and today's use, makes an API key (shown once), queries /v1 with
it, and revokes it; a reviewer of the lab sees the use per grant and day.

The day's use is recorded through the service the /v1 API records it with
(`hosted_usage.record`, the worker's answered `usage`), not by running a model worker: the
browser tests serve the app in process, and tests/hosted drives real workers."""

from __future__ import annotations

import re

import pytest
from browser_support import follow_login_link, login_link
from web.seed import deposit, depositor_token, make_login

HOSTED_POLICY = """\
organisation: acme-ai
models: ["acme-ai/hosted-*"]
nda: null
eligibility: {verified_email: true, proven_key: true}
approvals: {auto: true}
grant: {default_days: 7, max_days: 10, releases_per_file: 1, requests_per_minute: 30,
        tokens_per_day: 5000}
access: [weights, inference]
"""
MODEL = "acme-ai/hosted-small@1"


@pytest.fixture
def hosted_model(escrow, app, settings) -> None:
    """A sealed acme-ai/hosted-small@1 under a policy allowing weights and inference."""
    (settings.policy_dir / "acme-ai-hosted.yaml").write_text(HOSTED_POLICY)
    deposit(app.test_client(), escrow, depositor_token(escrow), model="acme-ai/hosted-small",
            version="1")


@pytest.fixture
def granted(escrow, app, hosted_model) -> str:
    """Kim's inference grant of acme-ai/hosted-small@1 (asked from her terminal: she has
    registered no key), used twice today: the grant's id."""
    from broker.services import hosted_usage

    client = app.test_client()
    kim = make_login(escrow, "kim@uni.example", "Kim Lee")
    made = client.post("/api/v1/requests", headers=kim.auth, json={
        "model": "acme-ai/hosted-small", "version": "1", "purpose": "sycophancy over time",
        "kind": "inference"})
    assert made.status_code == 201, made.json
    grant = made.json["grant"]
    assert grant["key_id"] is None
    for prompt, completion in ((7, 5), (11, 3)):
        with escrow.uow() as uow:
            hosted_usage.record(uow, grant["id"], {"prompt_tokens": prompt,
                                                   "completion_tokens": completion})
    return grant["id"]


def _v1_models(tab, key: str) -> tuple[int, dict]:
    """GET /v1/models with an API key, as an OpenAI client would (no cookie of the tab's)."""
    response = tab.page.request.fetch(tab.base + "/v1/models", method="GET",
                                      headers={"Authorization": f"Bearer {key}"})
    return response.status, response.json()


def test_a_person_without_a_key_makes_uses_and_revokes_an_api_key(tab, escrow, granted):
    kim = tab()
    follow_login_link(kim, login_link(escrow, "kim@uni.example", "Kim Lee"))
    page = kim.page
    row = page.locator(f"#hosted-{granted}")
    text = row.inner_text()
    for fact in (MODEL, "inference", "active", "30 requests per minute", "5000 tokens per day"):
        assert fact in text, (fact, text)
    assert row.locator(".usage-today").inner_text() == (
        "2 requests, 18 input and 8 output tokens")
    assert "No API keys." in page.locator("main").inner_text()
    kim.shot("me-hosted")

    page.get_by_label("Make an API key of grant").select_option(granted)
    page.get_by_role("button", name="Make an API key").click()
    page.wait_for_load_state()
    shown = page.locator(".new-api-key").inner_text()
    assert re.fullmatch(r"ehk_\S+", shown), shown
    kim.shot("me-api-key-created")
    key_id = page.locator("#created-key code").first.inner_text()
    assert shown.startswith(f"ehk_{key_id}_")

    status, listed = _v1_models(kim, shown)
    assert status == 200 and [m["id"] for m in listed["data"]] == [MODEL]

    kim.open("/me")  # shown once: never again
    assert page.locator(".new-api-key").count() == 0
    assert shown not in page.content()
    key_row = page.locator(f"#api-key-{key_id}")
    assert MODEL in key_row.inner_text() and "usable" in key_row.inner_text()
    assert "never" not in key_row.inner_text()  # last used: by the /v1 call above

    key_row.get_by_role("button", name="Revoke").click()
    page.wait_for_url(re.compile(r".*/me\?revoked="))
    assert f"{key_id} is revoked" in page.get_by_role("status").inner_text()
    assert "revoked" in page.locator(f"#api-key-{key_id} .badge").inner_text()
    assert page.locator(f"#api-key-{key_id} button").count() == 0
    kim.shot("me-api-key-revoked")
    status, refused = _v1_models(kim, shown)
    assert status == 401, refused

    kim.follow("My access")  # the grant without a key, on the grants page too
    card = page.locator(f"#{granted}")
    assert "no key, no weights" in card.inner_text()
    assert card.locator(".fetch-command").count() == 0
    assert kim.errors == []


def test_the_labs_reviewers_see_hosted_usage_per_grant_and_day(tab, escrow, granted):
    from datetime import UTC, datetime

    reviewer = tab()
    follow_login_link(reviewer, login_link(escrow, "rita@acme.example", "Rita Reviewer",
                                           org_roles=(("acme-ai", "reviewer"),)))
    reviewer.follow("Lab")
    reviewer.follow("Hosted usage")
    page = reviewer.page
    card = page.locator(f"#usage-{granted}")
    assert MODEL in card.inner_text() and "kim@uni.example" in card.inner_text()
    today = datetime.now(UTC).date().isoformat()
    cells = card.locator(f"#usage-{granted}-{today} td").all_inner_texts()
    assert cells == ["2", "18", "8"]
    assert "2 requests, 18 input and 8 output tokens" in card.locator(".usage-total").inner_text()
    reviewer.shot("lab-usage")

    other = tab()
    follow_login_link(other, login_link(escrow, "olaf@other.example", "Olaf Other",
                                        org_roles=(("other-lab", "admin"),)))
    response = other.page.goto(other.base + "/lab/acme-ai/usage")
    assert response.status == 403
    assert reviewer.errors == []


def test_a_person_without_a_key_asks_for_inference_on_the_request_page(tab, escrow,
                                                                         hosted_model):
    kira = tab()
    follow_login_link(kira, login_link(escrow, "kira@uni.example", "Kira Noor"))
    page = kira.open("/request/acme-ai/hosted-small/1")
    assert "a proven key" in page.locator("#missing").inner_text()  # weights: a key is missing
    summary = page.locator("ul.policy").inner_text()
    assert "(for weights; inference access needs no key)" in summary
    assert "30 requests per minute and 5000 tokens per day" in summary
    kira.follow("inference", exact=True)
    assert "No key is needed for inference access" in page.locator("main").inner_text()
    assert "would be granted at once" in page.locator("#missing").inner_text()
    assert page.locator("#key_id").count() == 0
    kira.shot("request-inference")
    page.get_by_label("Purpose").fill("how the model answers over a year")
    page.get_by_role("button", name="Send the request").click()
    page.wait_for_url(re.compile(r".*/requests\?made="))
    assert "granted" in page.get_by_role("status").inner_text()
    card = page.locator("section.card").first
    assert "inference" in card.inner_text() and "no key, no weights" in card.inner_text()
    kira.open("/me")
    assert "acme-ai/hosted-small@1" in page.locator("#hosted-grants").inner_text()
    assert kira.errors == []
