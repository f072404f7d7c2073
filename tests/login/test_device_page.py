"""The /device page where a person logged in in the browser approves or denies a CLI login.

What it renders and refuses does not depend on the database, so it runs on SQLite only; the
flow itself (test_device_flow.py) runs on both."""

import pytest
from sqlalchemy import select

from broker.adapters.db.models import DeviceAuthorization

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def state_of(escrow, user_code: str) -> str:
    with escrow.uow() as uow:
        return uow.session.scalar(
            select(DeviceAuthorization.state).where(DeviceAuthorization.user_code == user_code)
        )


def test_the_page_sends_a_browser_that_is_not_logged_in_to_log_in_first(app, terminal):
    started = terminal.start().json
    response = app.test_client().get(f"/device?user_code={started['user_code']}")
    assert response.status_code == 302
    assert response.headers["Location"] == (
        f"/auth/login?next=%2Fdevice%3Fuser_code%3D{started['user_code']}"
    )


def test_the_page_shows_the_code_the_client_and_when_and_cannot_be_framed(terminal, browser):
    started = terminal.start().json
    page = browser.page(started["user_code"].lower().replace("-", " "))
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert started["user_code"] in text
    assert "escrow-cli" in text
    assert "seconds ago" in text
    assert "ada@uni.example" in text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_the_page_asks_for_a_code_and_explains_a_wrong_one(browser):
    assert 'name="user_code"' in browser.client.get("/device").get_data(as_text=True)
    malformed = browser.page("hello")
    assert malformed.status_code == 422
    assert "is not 8 letters" in malformed.get_data(as_text=True)
    assert browser.page("BCDF-GHJK").status_code == 404


def test_an_answer_without_the_csrf_token_is_refused(escrow, terminal, browser):
    started = terminal.start().json
    response = browser.answer(started["user_code"], csrf="forged")
    assert response.status_code == 403
    assert state_of(escrow, started["user_code"]) == "pending"


def test_a_code_answered_once_cannot_be_answered_again(terminal, browser):
    started = terminal.start().json
    browser.answer(started["user_code"], "deny")
    with browser.client.session_transaction() as cookie:
        csrf = cookie["csrf_token"]
    again = browser.client.post(
        "/device", data={"user_code": started["user_code"], "action": "approve", "csrf_token": csrf}
    )
    assert again.status_code == 404
    assert "already answered" in again.get_data(as_text=True)


def test_approve_and_deny_look_different_deny_is_the_secondary_button(terminal, browser):
    import re

    started = terminal.start().json
    text = browser.page(started["user_code"]).get_data(as_text=True)
    buttons = dict(re.findall(r'<button type="submit" name="action" value="(\w+)"([^>]*)>', text))
    assert set(buttons) == {"approve", "deny"}
    assert 'class="secondary"' in buttons["deny"]
    assert "class=" not in buttons["approve"]  # the primary, filled button
    assert "button.secondary { background: var(--surface)" in text  # base.html's inline style
