"""Hosted access on the pages, on SQLite and PostgreSQL: /me's grants, today's use and API keys
(made with the form, shown once, revoked; someone else's refused), and the lab's use per grant
and day over the window, to the organisation's reviewers and admins only. (In Chromium:
tests/browser/test_hosted_pages.py.)"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from web.seed import deposit, depositor_token

HOSTED_POLICY = """\
organisation: acme-ai
models: ["acme-ai/hosted-*"]
nda: null
eligibility: {verified_email: true, proven_key: true}
approvals: {auto: true}
grant: {default_days: 7, max_days: 10, releases_per_file: 1, tokens_per_day: 900}
access: [inference, internals]
"""


@pytest.fixture
def granted(escrow, client, settings, visitor) -> tuple[object, str]:
    """Kim (no key) and her internals grant of acme-ai/hosted-small@1, used today and 3 days
    ago (as the /v1 API records it), and on a day outside the lab's window."""
    from broker.domain.clock import now
    from broker.services import hosted_usage

    (settings.policy_dir / "acme-ai-hosted.yaml").write_text(HOSTED_POLICY)
    deposit(client, escrow, depositor_token(escrow), model="acme-ai/hosted-small", version="1")
    kim = visitor("kim@uni.example", "Kim Lee")
    made = client.post("/api/v1/requests", headers=kim.login.auth, json={
        "model": "acme-ai/hosted-small", "version": "1", "purpose": "a study",
        "kind": "internals"})
    assert made.status_code == 201, made.json
    grant_id = made.json["grant"]["id"]
    moment = now()
    for days_ago, prompt, completion in ((0, 5, 2), (0, 4, 1), (3, 10, 20), (30, 99, 99)):
        with escrow.uow() as uow:
            hosted_usage.record(uow, grant_id, {"prompt_tokens": prompt,
                                                "completion_tokens": completion},
                                moment - timedelta(days=days_ago))
    return kim, grant_id


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_me_shows_the_grant_with_todays_use_and_keys_are_made_once_and_revoked(
        granted, visitor):
    kim, grant_id = granted
    page = _text(kim.page("/me"))
    assert "acme-ai/hosted-small@1" in page and "internals" in page
    assert "no limit of requests per minute; 900 tokens per day" in page
    assert "2 requests, 9 input and 3 output tokens" in page
    assert "No API keys." in page

    made = kim.post("/me/hosted-keys", {"grant_id": grant_id})
    assert made.status_code == 200
    html = made.get_data(as_text=True)
    secret = re.search(r'class="new-api-key">(ehk_[^<]+)<', html).group(1)
    assert made.headers["Cache-Control"] == "no-store"
    again = kim.page("/me")
    assert secret not in again and 'class="new-api-key"' not in again
    key_id = secret.split("_")[1]
    assert f'id="api-key-{key_id}"' in again and "never" in _text(again)

    stranger = visitor("sam@uni.example")
    refused = stranger.post(f"/me/hosted-keys/{key_id}/revoke")
    assert refused.status_code == 404
    assert stranger.post("/me/hosted-keys", {"grant_id": grant_id}).status_code == 404

    revoked = kim.post(f"/me/hosted-keys/{key_id}/revoke")
    assert revoked.status_code == 303 and revoked.headers["Location"].startswith("/me?revoked=")
    page = _text(kim.page(f"/me?revoked={key_id}"))
    assert f"API key {key_id} is revoked" in page
    assert kim.post("/me/hosted-keys", {"grant_id": grant_id}, csrf=False).status_code == 403


def test_the_lab_sees_use_per_grant_and_day_in_its_window(granted, visitor):
    from broker.domain.clock import now

    _, grant_id = granted
    for who in (visitor("rita@acme.example", org_roles=(("acme-ai", "reviewer"),)),
                visitor("ada@acme.example", org_roles=(("acme-ai", "admin"),))):
        html = who.page("/lab/acme-ai/usage")
        today = now().date()
        for day, figures in ((today, "2 9 3"), (today - timedelta(days=3), "1 10 20")):
            row = re.search(rf'id="usage-{grant_id}-{day.isoformat()}">(.*?)</tr>', html, re.S)
            assert row and _text(row.group(1)).split() == [day.isoformat(), *figures.split()]
        assert "kim@uni.example" in html
        assert "3 requests, 19 input and 23 output tokens" in _text(html)  # 30 days ago: out
        assert str((today - timedelta(days=30)).isoformat()) not in html
    for who in (visitor("kim@uni.example"),
                visitor("olaf@other.example", org_roles=(("other-lab", "admin"),))):
        assert who.get("/lab/acme-ai/usage").status_code == 403


def test_the_usage_service_authorizes_itself(granted, escrow, visitor):
    """Not only the page: the service refuses a person without a role in the organisation,
    and an admin of another one."""
    from broker.domain.principals import Principal, PrincipalKind
    from broker.errors import Forbidden
    from broker.services import hosted_usage

    kim, _ = granted
    olaf = visitor("olaf@other.example", org_roles=(("other-lab", "admin"),))
    for login in (kim.login, olaf.login):
        with escrow.uow() as uow:
            person = Principal(kind=PrincipalKind.USER, id=str(login.user_id),
                               org_roles=frozenset({("other-lab", "admin")}))
            with pytest.raises(Forbidden):
                hosted_usage.org_usage(uow, person, "acme-ai")


REVIEWED_POLICY = """\
organisation: acme-ai
models: ["acme-ai/reviewed-*"]
nda: null
approvals: {count: 1, role: reviewer}
grant: {default_days: 7, max_days: 10, releases_per_file: 1}
access: [inference]
"""


def test_a_reviewer_sees_the_kind_asked_and_approves_a_keyless_grant(
        escrow, client, settings, visitor, reviewer):
    (settings.policy_dir / "acme-ai-reviewed.yaml").write_text(REVIEWED_POLICY)
    deposit(client, escrow, depositor_token(escrow), model="acme-ai/reviewed-small",
            version="1")
    kim = visitor("kim@uni.example", "Kim Lee")
    made = client.post("/api/v1/requests", headers=kim.login.auth, json={
        "model": "acme-ai/reviewed-small", "version": "1", "purpose": "a study",
        "kind": "inference"})
    assert made.status_code == 201 and made.json["request"]["state"] == "pending", made.json
    request_id = made.json["request"]["id"]
    card = re.search(rf'<section class="card" id="{request_id}".*?</section>',
                     reviewer.page("/lab/reviews"), re.S).group(0)
    assert "Kind of access inference: the hosted model" in _text(card)
    assert "(not needed for inference)" in card
    decided = reviewer.post(f"/lab/requests/{request_id}/decide", {"decision": "approve"})
    assert decided.status_code == 303
    [grant] = client.get("/api/v1/grants", headers=kim.login.auth).json["grants"]
    assert (grant["kind"], grant["key_id"], grant["state"]) == ("inference", None, "active")
    assert "none: hosted access" in _text(reviewer.page("/lab/acme-ai/grants"))
