"""Web login end to end: the broker over HTTP, a real OpenID Provider (node oidc-provider) on
loopback, and a browser-like client going through the provider's login and consent pages."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from sqlalchemy import func, select
from web.seed import make_login_link as make_link

from broker.adapters.db.models import AuditEvent, LoginLink, LoginSession, User


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({**query(url), **changes})))


def audit_actions(escrow) -> list[str]:
    with escrow.uow() as uow:
        return list(uow.session.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)))


def count(escrow, model) -> int:
    with escrow.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(model))


def assert_nothing_written(escrow) -> None:
    assert count(escrow, User) == 0
    assert count(escrow, LoginSession) == 0
    assert not {"user.created", "user.login"} & set(audit_actions(escrow))


# --- a login, a logout, a second login --------------------------------------------------------


def test_a_login_lands_on_the_persons_page_and_me_describes_them(
    escrow, login_app, browser, oidc_provider
):
    answer = browser.login()
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/me"
    page = browser.get("/me")
    assert page.status_code == 200
    assert "Ada Lovelace" in page.text
    me = browser.me().json()
    assert me["issuer"] == oidc_provider.issuer
    assert me["subject"] == "ada"
    assert me["email"] == "ada@uni.example"
    assert me["email_verified"] is True
    assert me["name"] == "Ada Lovelace"
    assert me["affiliations"] == ["member@uni.example"]
    assert audit_actions(escrow)[-2:] == ["user.created", "user.login"]


def test_an_affiliation_outside_the_issuers_scopes_is_kept_but_not_trusted(
    escrow, login_app, browser
):
    browser.login()
    assert browser.me().json()["affiliations"] == ["member@uni.example"]
    with escrow.uow() as uow:
        profile = uow.session.scalars(select(User)).one().profile
        raw = json.loads(profile.claims)
    kept = raw["id_token"].get("eduperson_scoped_affiliation") or raw["userinfo"][
        "eduperson_scoped_affiliation"
    ]
    assert kept == ["member@uni.example", "staff@other.example"]


def test_an_email_counts_as_verified_only_within_the_issuers_domains(login_app, new_browser):
    for account, email, affiliations in [
        ("bob", "bob@elsewhere.example", ["student@uni.example"]),  # verified, other domain
        ("eve", "eve@uni.example", []),  # in uni.example, but not verified by the provider
    ]:
        browser = new_browser()
        browser.login(account)
        me = browser.me().json()
        assert (me["email"], me["email_verified"], me["affiliations"]) == (
            email, False, affiliations)


def test_logout_revokes_the_session_on_the_server(escrow, login_app, browser, new_browser):
    browser.login()
    stolen = browser.cookie
    answer = browser.logout()
    assert answer.status_code == 200
    assert "logged out" in answer.text
    assert browser.me().status_code == 401
    replayed = new_browser()
    replayed.http.cookies.set("escrow_session", stolen)
    assert replayed.me().status_code == 401  # the old cookie names a revoked login session
    assert audit_actions(escrow)[-1] == "user.logout"


def test_logout_without_the_csrf_token_is_refused(login_app, browser):
    browser.login()
    answer = browser.post("/auth/logout", data={"csrf_token": "forged"})
    assert answer.status_code == 403
    assert "csrf" in answer.text
    assert browser.me().status_code == 200


def test_a_second_login_maps_to_the_same_user(escrow, login_app, browser, new_browser):
    browser.login()
    first = browser.me().json()
    other = new_browser()
    other.login()
    assert other.me().json()["id"] == first["id"]
    assert count(escrow, User) == 1
    assert count(escrow, LoginSession) == 2
    assert audit_actions(escrow).count("user.login") == 2
    assert audit_actions(escrow).count("user.created") == 1


def test_the_session_cookie_is_rotated_at_login(login_app, browser):
    browser.get("/auth/login")
    before = browser.cookie
    browser.login()
    assert browser.cookie != before


# --- refusals: nothing written, no session ----------------------------------------------------


def test_an_error_from_the_provider_is_shown_and_starts_no_session(escrow, login_app, browser):
    callback = browser.to_provider(abort=True)
    assert query(callback)["error"] == "access_denied"
    answer = browser.get(callback)
    assert answer.status_code == 401
    assert "text/html" in answer.headers["Content-Type"]
    assert "refused the login: access_denied" in answer.text
    assert browser.me().status_code == 401
    assert_nothing_written(escrow)


TAMPERED = {
    "alter": "another subject, the signature kept",
    "resign": "signed with a key that is not the provider's",
    "aud": "made for another client",
    "iss": "naming another issuer",
    "exp": "expired",
    "nonce": "for another login (nonce)",
}


def test_a_tampered_id_token_is_refused(escrow, login_app, new_browser, oidc_provider):
    for mode, damage in TAMPERED.items():
        oidc_provider.tamper(mode)
        browser = new_browser()
        answer = browser.login()
        assert answer.status_code == 401, f"an ID token {damage} was accepted"
        assert "the ID token failed verification" in answer.text
        assert browser.me().status_code == 401
    assert_nothing_written(escrow)


def test_a_replayed_callback_is_refused(escrow, login_app, browser, new_browser):
    callback = browser.to_provider()
    before = browser.cookie  # the session cookie holding the pending login
    assert browser.get(callback).status_code == 302
    again = browser.get(callback)
    assert again.status_code == 400
    assert "unknown, expired or already used" in again.text
    # The same answer with the cookie from before the callback: the provider's code is spent.
    thief = new_browser()
    thief.http.cookies.set("escrow_session", before)
    stolen = thief.get(callback)
    assert stolen.status_code == 401
    assert "refused the authorization code" in stolen.text
    assert thief.me().status_code == 401
    assert count(escrow, LoginSession) == 1


def test_a_callback_with_another_state_is_refused(escrow, login_app, browser):
    callback = browser.to_provider()
    answer = browser.get(with_query(callback, state="forged"))
    assert answer.status_code == 400
    assert_nothing_written(escrow)
    assert browser.get(callback).status_code == 400  # and the pending login is used up


def test_a_callback_without_a_pending_login_is_refused(escrow, login_app, browser, new_browser):
    callback = browser.to_provider()
    answer = new_browser().get(callback)  # another browser: login CSRF must not work
    assert answer.status_code == 400
    assert_nothing_written(escrow)


def test_an_answer_from_another_provider_is_refused(
    escrow, mount, oidc_provider, second_oidc_provider, new_browser
):
    """Mix-up: a login sent to "uni" must not take an answer (a code) that "other" made."""
    mount(uni=oidc_provider, other=second_oidc_provider)
    made_by_other = new_browser().to_provider("/auth/login?provider=other")
    victim = new_browser()
    for iss, refusal in [
        (second_oidc_provider.issuer, "but this login was sent to"),
        (oidc_provider.issuer, "refused the authorization code"),  # iss forged: code unknown
    ]:
        sent = victim.get("/auth/login?provider=uni")
        state = query(sent.headers["Location"])["state"]
        answer = victim.get(with_query(made_by_other, state=state, iss=iss))
        assert answer.status_code == 401
        assert refusal in answer.text
    assert victim.me().status_code == 401
    assert_nothing_written(escrow)


def test_several_providers_are_offered_to_choose_from(
    mount, oidc_provider, second_oidc_provider, browser
):
    mount(uni=oidc_provider, other=second_oidc_provider)
    page = browser.get("/auth/login?next=/device")
    assert page.status_code == 200
    assert "Log in with uni" in page.text
    assert "/auth/login?provider=other&amp;next=/device" in page.text
    assert browser.login(start="/auth/login?provider=other&next=/device").headers[
        "Location"] == "/device"


def test_a_provider_whose_discovery_names_another_issuer_is_not_used(
    mount, oidc_provider, browser
):
    named_otherwise = oidc_provider.issuer.replace("127.0.0.1", "localhost")
    elsewhere = replace(oidc_provider, issuer=named_otherwise)
    mount(uni=elsewhere)
    answer = browser.get("/auth/login")
    assert answer.status_code == 503
    assert "discovery names the issuer" in answer.text


# --- next, providers, max_age -----------------------------------------------------------------


def test_next_returns_to_a_local_page_and_never_leaves_the_site(login_app, new_browser):
    for target, landing in [  # more cases in test_oidc_rules
        ("/api/v1/me", "/api/v1/me"),
        ("https://evil.example/", "/me"),
        ("//evil.example/x", "/me"),
    ]:
        answer = new_browser().login(start="/auth/login?" + urlencode({"next": target}))
        assert answer.headers["Location"] == landing


def test_an_unknown_provider_is_refused(login_app, browser):
    answer = browser.get("/auth/login?provider=nope")
    assert answer.status_code == 404
    assert "not configured" in answer.text


def test_max_age_is_asked_of_the_provider_and_its_auth_time_recorded(login_app, browser):
    for bad in ["-1", "abc", "86401"]:
        assert browser.get(f"/auth/login?max_age={bad}").status_code == 400
    started = browser.get("/auth/login?max_age=300")
    assert query(started.headers["Location"])["max_age"] == "300"
    browser.login(start="/auth/login?max_age=300")
    auth_time = datetime.fromisoformat(browser.me().json()["auth_time"])
    assert abs(datetime.now(UTC) - auth_time) < timedelta(seconds=30)


# --- single-use login links -------------------------------------------------------------------


def test_a_login_link_works_once(escrow, login_app, browser, new_browser):
    secret = make_link(escrow)
    page = browser.get(f"/auth/link/{secret}")
    assert page.status_code == 200
    assert page.headers["Referrer-Policy"] == "no-referrer"
    token = browser.csrf_token(f"/auth/link/{secret}")
    answer = browser.post(f"/auth/link/{secret}", data={"csrf_token": token})
    assert answer.status_code == 302
    assert browser.me().json()["subject"] == "ada-sub"
    assert audit_actions(escrow)[-1] == "user.login"
    other = new_browser()
    again = other.post(f"/auth/link/{secret}",
                       data={"csrf_token": other.csrf_token(f"/auth/link/{secret}")})
    assert again.status_code == 401
    assert other.me().status_code == 401


def test_a_login_link_expires_after_ten_minutes(escrow, login_app, browser):
    secret = make_link(escrow)
    with escrow.uow() as uow:
        link = uow.session.scalars(select(LoginLink)).one()
        lifetime = link.expires_at - link.created_at
        assert abs(lifetime - timedelta(minutes=10)) < timedelta(seconds=1)
        link.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        uow.commit()
    token = browser.csrf_token(f"/auth/link/{secret}")
    answer = browser.post(f"/auth/link/{secret}", data={"csrf_token": token})
    assert answer.status_code == 401
    assert "invalid, used or expired" in answer.text
    assert count(escrow, LoginSession) == 0


def test_a_login_link_post_without_the_csrf_token_is_refused_and_not_used_up(
    escrow, login_app, browser
):
    secret = make_link(escrow)
    assert browser.post(f"/auth/link/{secret}").status_code == 403
    token = browser.csrf_token(f"/auth/link/{secret}")
    assert browser.post(f"/auth/link/{secret}", data={"csrf_token": token}).status_code == 302


# --- CSRF on cookie-authenticated API writes ----------------------------------------------------


def test_a_cookie_authenticated_api_write_needs_the_csrf_token(login_app, browser):
    browser.login()
    body = {"model": "acme-ai/gpt", "version": "1", "files": [{"path": "w", "size": 1}]}
    refused = browser.post("/api/v1/deposits", json=body)
    assert refused.status_code == 403
    assert "csrf" in refused.json()["detail"]
    token = browser.csrf_token()
    answered = browser.post("/api/v1/deposits", json=body, headers={"X-CSRF-Token": token})
    assert "csrf" not in answered.json()["detail"]  # past CSRF: now a question of roles
