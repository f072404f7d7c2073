"""The device authorization grant (RFC 8628), refresh and revocation, against the Flask app on
SQLite and PostgreSQL."""

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from broker.adapters.db.models import AuditEvent, DeviceAuthorization, LoginSession, UserToken

# Checks of the request's shape do not touch the database in ways that differ between backends.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


def audit_actions(escrow) -> list[str]:
    with escrow.uow() as uow:
        return list(uow.session.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)))


def device_row(escrow, user_code: str) -> DeviceAuthorization:
    with escrow.uow() as uow:
        row = uow.session.scalar(
            select(DeviceAuthorization).where(DeviceAuthorization.user_code == user_code)
        )
        uow.session.expunge(row)
        return row


def token_id(token: str) -> str:
    return token.split("_")[1]


# --- starting -----------------------------------------------------------------------------


def test_a_device_authorization_gives_codes_and_where_to_enter_them(escrow, terminal):
    response = terminal.start()
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert USER_CODE.match(body["user_code"])
    assert body["device_code"].startswith("edc_")
    assert body["verification_uri"] == escrow.settings.public_url + "/device"
    assert body["verification_uri_complete"] == (
        f"{escrow.settings.public_url}/device?user_code={body['user_code']}"
    )
    assert (body["expires_in"], body["interval"]) == (600, 5)
    row = device_row(escrow, body["user_code"])
    assert row.device_code_sha256 == hashlib.sha256(body["device_code"].encode()).digest()
    assert (row.state, row.client_id) == ("pending", "escrow-cli")


@SQLITE_ONLY
@pytest.mark.parametrize("fields", [{"client_id": "someone-else"}, {"client_id": ""}])
def test_an_unknown_client_is_refused_as_invalid_client(terminal, fields):
    response = terminal.start(**fields)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_client"


@SQLITE_ONLY
def test_a_client_with_a_secret_is_refused_with_401(terminal):
    response = terminal.client.post(
        "/oauth/device_authorization",
        data={"client_id": "x"},
        headers={"Authorization": "Basic eDp5"},
    )
    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@SQLITE_ONLY
def test_a_scope_is_refused_since_the_broker_has_none(terminal):
    assert terminal.start(scope="admin").json["error"] == "invalid_scope"


# --- polling ------------------------------------------------------------------------------


def test_polling_is_pending_and_slow_down_when_faster_than_the_interval(escrow, terminal):
    started = terminal.start().json
    first = terminal.poll(started["device_code"])
    assert (first.status_code, first.json["error"]) == (400, "authorization_pending")
    assert "error_description" in first.json
    assert first.mimetype == "application/json"
    second = terminal.poll(started["device_code"])
    assert second.json["error"] == "slow_down"
    assert device_row(escrow, started["user_code"]).interval_s == 10


def test_an_approved_code_gives_tokens_for_the_browsers_person(escrow, terminal, browser):
    started = terminal.start().json
    assert browser.answer(started["user_code"]).status_code == 200
    response = terminal.poll(started["device_code"])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    tokens = response.json
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 3600
    assert tokens["access_token"].startswith("eat_")
    assert tokens["refresh_token"].startswith("ert_")
    me = terminal.me(tokens["access_token"]).json
    assert (me["email"], me["issuer"]) == ("ada@uni.example", "https://idp.uni.example")
    assert me["auth_time"] == "2026-01-02T03:04:05+00:00"  # the browser login's, not now
    with escrow.uow() as uow:
        session = uow.session.get(UserToken, token_id(tokens["access_token"])).session
        assert (session.kind, session.issuer) == ("device", "https://idp.uni.example")
        session_id = session.id
    row = device_row(escrow, started["user_code"])
    assert (row.state, row.user_id, row.approved_session_id) == (
        "used",
        browser.user_id,
        session_id,
    )


def test_a_device_code_used_twice_is_refused(terminal, browser):
    started = terminal.start().json
    browser.answer(started["user_code"])
    assert terminal.poll(started["device_code"]).status_code == 200
    again = terminal.poll(started["device_code"])
    assert (again.status_code, again.json["error"]) == (400, "invalid_grant")


def test_a_denied_code_gets_access_denied_and_no_session(escrow, terminal, browser):
    started = terminal.start().json
    page = browser.answer(started["user_code"], "deny")
    assert "denied" in page.get_data(as_text=True)
    assert terminal.poll(started["device_code"]).json["error"] == "access_denied"
    with escrow.uow() as uow:
        kinds = set(uow.session.scalars(select(LoginSession.kind)))
    assert kinds == {"web"}


def test_an_expired_code_gets_expired_token_and_cannot_be_approved(
    escrow, terminal, browser, backdate, past
):
    started = terminal.start().json
    backdate(DeviceAuthorization, device_row(escrow, started["user_code"]).id, expires_at=past)
    assert terminal.poll(started["device_code"]).json["error"] == "expired_token"
    page = browser.page(started["user_code"])
    assert page.status_code == 404
    assert "unknown, expired or already answered" in page.get_data(as_text=True)


def test_an_approved_code_collected_too_late_ends_its_session(
    escrow, terminal, browser, backdate, past
):
    started = terminal.start().json
    browser.answer(started["user_code"])
    row = device_row(escrow, started["user_code"])
    backdate(DeviceAuthorization, row.id, expires_at=past)
    assert terminal.poll(started["device_code"]).json["error"] == "expired_token"
    with escrow.uow() as uow:
        assert uow.session.get(LoginSession, row.approved_session_id).revoked_at is not None


def test_polls_racing_for_an_approved_code_get_the_tokens_once(app, terminal, browser):
    started = terminal.start().json
    browser.answer(started["user_code"])

    def poll(_: int) -> int:
        return type(terminal)(app.test_client()).poll(started["device_code"]).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(poll, range(4)))
    assert statuses == [200, 400, 400, 400]


@SQLITE_ONLY
@pytest.mark.parametrize("device_code", ["edc_0000000000000000_" + "a" * 43, "garbage", ""])
def test_an_unknown_or_missing_device_code_is_refused(terminal, device_code):
    error = terminal.poll(device_code).json["error"]
    assert error == ("invalid_request" if not device_code else "invalid_grant")


@SQLITE_ONLY
def test_an_unknown_grant_type_and_a_repeated_parameter_are_refused(terminal):
    other = terminal.client.post(
        "/oauth/token", data={"grant_type": "password", "client_id": "escrow-cli"}
    )
    assert other.json["error"] == "unsupported_grant_type"
    twice = terminal.client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "client_id": ["escrow-cli", "escrow-cli"]},
    )
    assert twice.json["error"] == "invalid_request"


# --- refresh, revocation, expiry ----------------------------------------------------------


def test_a_refresh_gives_a_new_pair_and_spends_the_old_refresh_token(terminal, logged_in):
    renewed = terminal.refresh(logged_in["refresh_token"])
    assert renewed.status_code == 200
    assert renewed.json["refresh_token"] != logged_in["refresh_token"]
    assert terminal.me(renewed.json["access_token"]).status_code == 200


def test_a_replayed_refresh_token_is_refused_and_ends_the_login(escrow, terminal, logged_in):
    renewed = terminal.refresh(logged_in["refresh_token"]).json
    replay = terminal.refresh(logged_in["refresh_token"])
    assert (replay.status_code, replay.json["error"]) == (400, "invalid_grant")
    # someone holds a copy: the whole login ends, the legitimate new pair too
    assert terminal.me(renewed["access_token"]).status_code == 401
    assert terminal.refresh(renewed["refresh_token"]).json["error"] == "invalid_grant"
    assert "token.replayed" in audit_actions(escrow)


def test_refreshes_racing_with_one_token_give_one_new_pair(app, terminal, logged_in):
    def refresh(_: int) -> int:
        return type(terminal)(app.test_client()).refresh(logged_in["refresh_token"]).status_code

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(refresh, range(2)))
    assert statuses == [200, 400]


def test_revoking_ends_the_login_and_all_its_tokens(terminal, logged_in):
    assert terminal.revoke(logged_in["refresh_token"]).status_code == 200
    assert terminal.me(logged_in["access_token"]).status_code == 401
    refused = terminal.refresh(logged_in["refresh_token"])
    assert refused.json["error"] == "invalid_grant"


@SQLITE_ONLY
def test_revoking_an_unknown_or_spent_token_is_not_an_error(terminal):
    for token in ("eat_0000000000000000_" + "a" * 43, "nonsense"):
        response = terminal.revoke(token)
        assert (response.status_code, response.json) == (200, {})


def test_an_expired_access_token_gets_401_and_a_refresh_still_works(
    escrow, terminal, logged_in, backdate, past
):
    backdate(UserToken, token_id(logged_in["access_token"]), expires_at=past)
    response = terminal.me(logged_in["access_token"])
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert terminal.refresh(logged_in["refresh_token"]).status_code == 200


def test_a_login_session_revoked_elsewhere_refuses_its_tokens(escrow, terminal, logged_in):
    from broker.services.sessions import end_session

    with escrow.uow() as uow:
        end_session(uow, uow.session.get(UserToken, token_id(logged_in["access_token"])).session_id)
        uow.commit()
    assert terminal.me(logged_in["access_token"]).status_code == 401
    assert terminal.refresh(logged_in["refresh_token"]).json["error"] == "invalid_grant"


# --- the audit log ------------------------------------------------------------------------


def test_approval_denial_issue_and_revocation_are_audited_without_secrets(
    escrow, terminal, browser
):
    denied = terminal.start().json
    browser.answer(denied["user_code"], "deny")
    started = terminal.start().json
    browser.answer(started["user_code"])
    tokens = terminal.poll(started["device_code"]).json
    renewed = terminal.refresh(tokens["refresh_token"]).json
    terminal.revoke(renewed["access_token"])
    actions = audit_actions(escrow)
    for action in (
        "device.denied",
        "device.approved",
        "user.login",
        "token.issued",
        "token.revoked",
        "user.logout",
    ):
        assert action in actions, actions
    assert actions.count("token.issued") == 2  # the device grant and the refresh
    with escrow.uow() as uow:
        leaves = b"".join(uow.session.scalars(select(AuditEvent.leaf)))
    for secret in (
        denied["device_code"],
        started["device_code"],
        tokens["access_token"],
        tokens["refresh_token"],
        renewed["access_token"],
        renewed["refresh_token"],
    ):
        assert secret.split("_", 2)[2].encode() not in leaves  # <prefix>_<id>_<secret>
    assert started["user_code"].encode() not in leaves
