"""The researcher's pages: profile with key proofs, the NDA to read and sign, the request form
with what the policy still misses, and the list of requests and grants."""

from __future__ import annotations

import re

from sqlalchemy import select
from web.seed import NDA_ID

from broker import age
from broker.adapters.db.models import AccessRequest, Grant, NdaSignature

REQUEST_PAGE = "/request/acme-ai/gpt-small/2024-05"


def rows(escrow, model) -> list:
    """The table's rows, loaded and detached (readable after the transaction ends)."""
    with escrow.uow() as uow:
        found = list(uow.session.scalars(select(model)))
        uow.session.expunge_all()
        return found


def approve(reviewer, request_id: str) -> None:
    decided = reviewer.post(f"/lab/requests/{request_id}/decide", {"decision": "approve"})
    assert decided.status_code == 303, decided.get_data(as_text=True)


# --- logging in -------------------------------------------------------------------------------


def test_a_researcher_page_without_a_login_sends_you_to_log_in(visitor):
    for path in ("/requests", REQUEST_PAGE, "/me"):
        response = visitor().get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/auth/login?next=")
        assert path.split("/")[1] in response.headers["Location"]


# --- the profile ----------------------------------------------------------------------------


def test_a_key_not_proven_yet_shows_the_exact_commands_to_prove_it(visitor, client, settings):
    rosa = visitor("rosa@uni.example")
    recipient = age.generate_x25519_identity().to_recipient().encode()
    made = client.post("/api/v1/me/keys", headers=rosa.login.auth, json={"recipient": recipient})
    key_id = made.json["id"]
    page = rosa.page("/me")
    assert "pending: not proven yet" in page
    assert (f"escrow keys prove {key_id} --identity key.txt --broker {settings.public_url}"
            in page)
    assert f"| escrow keys prove {key_id} --response - --broker {settings.public_url}" in page


def test_a_proven_key_shows_as_proven(researcher):
    page = researcher.page("/me")
    assert '<span class="badge ok">proven</span>' in page
    assert "Prove that you hold key" not in page


# --- the NDA ----------------------------------------------------------------------------------


def test_the_nda_page_shows_the_exact_text_and_its_hash(visitor, client):
    text = client.get(f"/api/v1/ndas/{NDA_ID}").json
    page = visitor().page(f"/ndas/{NDA_ID}")
    assert text["sha256"] in page
    assert "Research Access Agreement" in page
    assert "Log in to sign" in page


def test_signing_the_nda_records_a_signature_of_that_text(visitor, escrow, client):
    rosa = visitor("rosa@uni.example")
    text = client.get(f"/api/v1/ndas/{NDA_ID}").json
    page = rosa.page(f"/ndas/{NDA_ID}")
    assert 'name="typed_name"' in page and 'for="typed_name"' in page
    signed = rosa.post(f"/ndas/{NDA_ID}/sign", {
        "version": text["version"], "sha256": text["sha256"], "typed_name": "Rosa Franklin",
        "accept": "yes"})
    assert signed.status_code == 303
    (signature,) = rows(escrow, NdaSignature)
    assert signature.text_sha256 == text["sha256"]
    assert "You signed this text" in rosa.page(signed.headers["Location"])


def test_signing_without_the_csrf_token_is_refused_and_records_nothing(visitor, escrow, client):
    rosa = visitor("rosa@uni.example")
    text = client.get(f"/api/v1/ndas/{NDA_ID}").json
    refused = rosa.post(f"/ndas/{NDA_ID}/sign", {
        "version": text["version"], "sha256": text["sha256"], "typed_name": "Rosa Franklin",
        "accept": "yes"}, csrf=False)
    assert refused.status_code == 403
    assert "CSRF token" in refused.get_data(as_text=True)
    assert rows(escrow, NdaSignature) == []


def test_signing_without_ticking_acceptance_records_nothing(visitor, escrow, client):
    rosa = visitor("rosa@uni.example")
    text = client.get(f"/api/v1/ndas/{NDA_ID}").json
    refused = rosa.post(f"/ndas/{NDA_ID}/sign", {
        "version": text["version"], "sha256": text["sha256"], "typed_name": "Rosa Franklin"})
    assert refused.status_code == 422
    assert "tick the box" in refused.get_data(as_text=True)
    assert rows(escrow, NdaSignature) == []


# --- asking for access ------------------------------------------------------------------------


def test_the_request_page_says_what_is_still_missing(visitor, sealed):
    page = visitor("newcomer@uni.example").page(REQUEST_PAGE)
    assert "Still missing" in page
    assert f'href="/ndas/{NDA_ID}?next=' in page  # sign, then come back here
    assert 'href="/me#keys"' in page
    assert 'for="purpose"' in page and 'for="days"' in page


def test_the_request_form_makes_a_pending_request(researcher, escrow, sealed):
    page = researcher.page(REQUEST_PAGE)
    assert "Nothing is missing" in page
    made = researcher.post(REQUEST_PAGE, {"purpose": "sycophancy study", "days": "10"})
    assert made.status_code == 303
    (request,) = rows(escrow, AccessRequest)
    assert (request.state, request.purpose, request.days_requested) == (
        "pending", "sycophancy study", 10)
    listing = researcher.page(made.headers["Location"])
    assert f"Request <code>{request.id}</code>" in listing
    assert "waiting for the reviewers" in listing


def test_a_request_without_the_csrf_token_is_refused_and_not_made(researcher, escrow, sealed):
    refused = researcher.post(REQUEST_PAGE, {"purpose": "study"}, csrf=False)
    assert refused.status_code == 403
    assert rows(escrow, AccessRequest) == []


def test_a_request_of_someone_ineligible_is_recorded_as_denied_and_says_why(
    visitor, escrow, sealed
):
    newcomer = visitor("newcomer@uni.example")
    refused = newcomer.post(REQUEST_PAGE, {"purpose": "study"})
    assert refused.status_code == 422
    text = refused.get_data(as_text=True)
    (request,) = rows(escrow, AccessRequest)
    assert request.state == "denied"
    assert f"Your request {request.id} was refused" in text


def test_a_request_with_no_purpose_keeps_the_form_and_says_so(researcher, escrow, sealed):
    refused = researcher.post(REQUEST_PAGE, {"purpose": "  ", "days": "7"})
    assert refused.status_code == 422
    assert "&#39;purpose&#39; is missing" in refused.get_data(as_text=True)
    assert 'value="7"' in refused.get_data(as_text=True)
    assert rows(escrow, AccessRequest) == []


def test_a_model_that_does_not_exist_is_a_not_found_page(researcher):
    response = researcher.get("/request/acme-ai/nope/1")
    assert response.status_code == 404
    assert "does not exist" in response.get_data(as_text=True)


# --- my requests and grants -------------------------------------------------------------------


def test_a_pending_request_can_be_withdrawn(researcher, escrow, sealed):
    researcher.post(REQUEST_PAGE, {"purpose": "study"})
    (request,) = rows(escrow, AccessRequest)
    page = researcher.page("/requests")
    assert f'action="/requests/{request.id}/withdraw"' in page
    withdrawn = researcher.post(f"/requests/{request.id}/withdraw")
    assert withdrawn.status_code == 303
    assert rows(escrow, AccessRequest)[0].state == "withdrawn"
    assert f"Request <code>{request.id}</code> is withdrawn" in researcher.page(
        withdrawn.headers["Location"])


def test_someone_elses_request_cannot_be_withdrawn(researcher, visitor, escrow, sealed):
    researcher.post(REQUEST_PAGE, {"purpose": "study"})
    (request,) = rows(escrow, AccessRequest)
    refused = visitor("mallory@uni.example").post(f"/requests/{request.id}/withdraw")
    assert refused.status_code == 403
    assert rows(escrow, AccessRequest)[0].state == "pending"


def test_a_grant_shows_the_time_left_and_the_exact_fetch_command(
    researcher, reviewer, escrow, sealed, settings
):
    researcher.post(REQUEST_PAGE, {"purpose": "study", "days": "12"})
    (request,) = rows(escrow, AccessRequest)
    approve(reviewer, request.id)
    (grant,) = rows(escrow, Grant)
    page = researcher.page("/requests")
    assert "12 days left" in page
    command = re.search(r'<code class="fetch-command">([^<]+)</code>', page)[1]
    assert command.replace(" \\\n    ", " ") == (
        f"escrow fetch acme-ai/gpt-small@2024-05 --grant {grant.id} --identity key.txt "
        f"--out ./gpt-small-2024-05 --broker {settings.public_url}"
    )


def test_an_active_grant_can_be_renewed_when_the_policy_allows(
    researcher, reviewer, escrow, sealed
):
    researcher.post(REQUEST_PAGE, {"purpose": "study"})
    (request,) = rows(escrow, AccessRequest)
    approve(reviewer, request.id)
    (grant,) = rows(escrow, Grant)
    assert f'action="/grants/{grant.id}/renew"' in researcher.page("/requests")
    renewed = researcher.post(f"/grants/{grant.id}/renew")
    assert renewed.status_code == 303
    renewal = next(r for r in rows(escrow, AccessRequest) if r.id != request.id)
    assert (renewal.state, renewal.renews_grant_id) == ("pending", grant.id)
