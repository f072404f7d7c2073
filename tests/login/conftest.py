"""CLI login fixtures: a person logged in in a browser (a Flask test client with a web login
session), and the terminal's side of the device flow as form posts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.principals import OPERATOR
from broker.services import people, sessions

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ISSUER = "https://idp.uni.example"
WEB_AUTH_TIME = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Browser:
    """A browser where a person is logged in to the broker (their web login session)."""

    client: object
    user_id: int
    web_session_id: str

    def page(self, user_code: str):
        return self.client.get(f"/device?user_code={user_code}")

    def answer(self, user_code: str, action: str = "approve", csrf: str | None = None):
        page = self.page(user_code)
        if csrf is None:
            found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
            assert found, page.get_data(as_text=True)
            csrf = found.group(1)
        return self.client.post(
            "/device", data={"user_code": user_code, "action": action, "csrf_token": csrf}
        )


class Terminal:
    """What `escrow login` sends: form posts to the OAuth endpoints."""

    def __init__(self, client) -> None:
        self.client = client

    def start(self, **fields):
        return self.client.post(
            "/oauth/device_authorization", data={"client_id": "escrow-cli", **fields}
        )

    def poll(self, device_code: str, **fields):
        return self.client.post(
            "/oauth/token",
            data={
                "grant_type": DEVICE_GRANT,
                "device_code": device_code,
                "client_id": "escrow-cli",
                **fields,
            },
        )

    def refresh(self, refresh_token: str):
        return self.client.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": "escrow-cli",
            },
        )

    def revoke(self, token: str):
        return self.client.post("/oauth/revoke", data={"token": token, "client_id": "escrow-cli"})

    def me(self, access_token: str):
        return self.client.get("/api/v1/me", headers={"Authorization": f"Bearer {access_token}"})


def make_person(escrow, email: str = "ada@uni.example"):
    with escrow.uow() as uow:
        user = people.upsert_user(
            uow,
            OPERATOR,
            ISSUER,
            "sub-" + email,
            people.Claims(email=email, email_verified=True, name="Ada Lovelace"),
        )
        web = sessions.start_session(uow, user, "web", ISSUER, WEB_AUTH_TIME)
        uow.commit()
        return user.id, web.id


@pytest.fixture
def browser(app, escrow) -> Browser:
    user_id, web_session_id = make_person(escrow)
    client = app.test_client()
    with client.session_transaction() as cookie:
        cookie["login_session"] = web_session_id
    return Browser(client, user_id, web_session_id)


@pytest.fixture
def terminal(app) -> Terminal:
    return Terminal(app.test_client())


@pytest.fixture
def logged_in(terminal, browser):
    """A finished device login: the token response of an approved, exchanged code."""
    started = terminal.start().json
    assert browser.answer(started["user_code"]).status_code == 200
    tokens = terminal.poll(started["device_code"])
    assert tokens.status_code == 200, tokens.json
    return tokens.json


@pytest.fixture
def backdate(escrow):
    """Set columns of one row, e.g. an expiry in the past."""

    def change(model, key, **columns) -> None:
        with escrow.uow() as uow:
            row = uow.session.get(model, key)
            for name, value in columns.items():
                setattr(row, name, value)
            uow.commit()

    return change


@pytest.fixture
def past() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=1)


# --- a real broker process, and a browser logged in to it with a login link -----------------


@pytest.fixture(scope="module")
def login_broker(tmp_path_factory):
    """One broker process (SQLite, local store) for a module's end-to-end login tests."""
    from live import start_broker

    broker = start_broker(tmp_path_factory.mktemp("login-broker"))
    yield broker
    broker.stop()


class RealBrowser:
    """A cookie-keeping HTTP client that logged in with a single-use login link (what a person
    does after `escrow admin login-link`), then fills in the /device page like a person."""

    def __init__(self, base_url: str) -> None:
        import http.cookiejar
        import urllib.request

        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, url: str) -> tuple[int, str]:
        import urllib.error

        try:
            with self.opener.open(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def post(self, url: str, fields: dict[str, str]) -> tuple[int, str]:
        import urllib.error
        from urllib.parse import urlencode

        try:
            with self.opener.open(url, data=urlencode(fields).encode(), timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def form_csrf(self, page: str) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert found, page
        return found.group(1)

    def log_in_with_link(self, link_url: str) -> None:
        status, page = self.get(link_url)
        assert status == 200, page
        status, page = self.post(link_url, {"csrf_token": self.form_csrf(page)})
        assert status == 200, page  # followed to /me

    def answer(self, verification_uri_complete: str, action: str = "approve") -> str:
        status, page = self.get(verification_uri_complete)
        assert status == 200, page
        code = re.search(r'name="user_code" value="([^"]+)"', page).group(1)
        status, page = self.post(
            self.base_url + "/device",
            {"csrf_token": self.form_csrf(page), "user_code": code, "action": action},
        )
        assert status == 200, page
        return page


@pytest.fixture
def real_browser(login_broker) -> RealBrowser:
    """A browser logged in to `login_broker` as a new person (ada-N@uni.example)."""
    import secrets as random

    from broker.config import load_settings
    from broker.container import build_escrow

    escrow = build_escrow(load_settings(login_broker.env))
    email = f"ada-{random.token_hex(3)}@uni.example"
    try:
        with escrow.uow() as uow:
            user = people.upsert_user(
                uow,
                OPERATOR,
                ISSUER,
                "sub-" + email,
                people.Claims(email=email, email_verified=True, name="Ada Lovelace"),
            )
            secret = sessions.create_login_link(uow, OPERATOR, user)
            uow.commit()
    finally:
        escrow.engine.dispose()
    browser = RealBrowser(login_broker.url)
    browser.email = email
    browser.log_in_with_link(f"{login_broker.url}/auth/link/{secret}")
    return browser
