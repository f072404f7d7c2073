"""`escrow login`, `whoami`, `logout` against a real broker process, approved from a second
HTTP client: a browser logged in with a single-use login link."""

import json
import os
import stat
import subprocess
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from live import ESCROW_BIN

from broker.cli import main
from broker.client import credentials, oauth
from broker.client.http import BrokerClient


@pytest.fixture
def terminal_env(login_broker, tmp_path) -> dict[str, str]:
    """The environment of a person's terminal: no service token, their own config dir."""
    env = {k: v for k, v in login_broker.env.items() if k != "ESCROW_TOKEN"}
    env["ESCROW_CONFIG_DIR"] = str(tmp_path / "config")
    return env


def escrow(env: dict[str, str], *args: str):
    """Run an escrow client command in this process (a new interpreter costs ~1.5 s)."""
    runner = CliRunner(env={**{k: None for k in os.environ}, **env})
    return runner.invoke(main, list(args), catch_exceptions=False)


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def me_status(url: str, token: str) -> int:
    request = urllib.request.Request(
        url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def stored(env: dict[str, str]) -> dict:
    return json.loads((Path(env["ESCROW_CONFIG_DIR"]) / "credentials.json").read_text())


def expire_access_token(env: dict[str, str]) -> None:
    """As if an hour had passed: the stored access token's expiry is in the past."""
    logins = stored(env)
    for login in logins.values():
        login["expires_at"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    (Path(env["ESCROW_CONFIG_DIR"]) / "credentials.json").write_text(json.dumps(logins))


def secrets_in(logins: dict) -> list[str]:
    """Each token and its secret half: neither may appear in any output or log."""
    found = []
    for login in logins.values():
        for name in ("access_token", "refresh_token"):
            found += [login[name], login[name].split("_", 2)[2]]
    return found


def log_in_here(login_broker, real_browser, env, action: str = "approve") -> dict:
    """The device flow through the client library, the browser answering at the first wait."""
    client = BrokerClient(login_broker.url)
    started = oauth.device_authorization(client)
    answered = []

    def sleep(seconds: float) -> None:
        if not answered:
            answered.append(real_browser.answer(started["verification_uri_complete"], action))

    tokens = oauth.wait_for_approval(client, started, sleep=sleep)
    credentials.store(login_broker.url, tokens, directory=Path(env["ESCROW_CONFIG_DIR"]))
    return tokens


def test_escrow_login_approved_in_the_browser_then_whoami_and_logout(
    login_broker, real_browser, terminal_env
):
    replaced = log_in_here(login_broker, real_browser, terminal_env)  # an earlier login
    login = subprocess.Popen(
        [ESCROW_BIN, "login", login_broker.url, "--json"],
        env=terminal_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pending = json.loads(login.stdout.readline())
        assert pending["state"] == "pending"
        assert pending["verification_uri"] == login_broker.url + "/device"
        done_page = real_browser.answer(pending["verification_uri_complete"])
        assert "Terminal login approved" in done_page
        out, err = login.communicate(timeout=30)
    finally:
        login.kill()
    assert login.returncode == 0, err
    result = last_json(out)
    assert result["state"] == "logged_in"
    assert result["me"]["email"] == real_browser.email
    assert pending["user_code"] in err and pending["verification_uri"] in err

    config = terminal_env["ESCROW_CONFIG_DIR"]
    path = os.path.join(config, "credentials.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o700
    first = stored(terminal_env)
    (entry,) = first.values()
    assert me_status(login_broker.url, replaced["access_token"]) == 401  # ended by the new one
    assert entry["user"] == f"Ada Lovelace <{real_browser.email}>"

    whoami = escrow(terminal_env, "whoami", "--json")
    assert whoami.exit_code == 0, whoami.output
    assert last_json(whoami.stdout)["email"] == real_browser.email
    text = escrow(terminal_env, "whoami")
    assert f"Ada Lovelace <{real_browser.email}> at {login_broker.url}" in text.stdout

    logout = escrow(terminal_env, "logout", "--json")
    assert logout.exit_code == 0, logout.output
    assert last_json(logout.stdout) == {
        "state": "logged_out",
        "broker": login_broker.url,
        "revoked": True,
    }
    assert stored(terminal_env) == {}
    assert me_status(login_broker.url, entry["access_token"]) == 401
    after = escrow(terminal_env, "whoami", "--broker", login_broker.url)
    assert after.exit_code == 1
    assert "escrow login" in after.stderr

    outputs = out + err + whoami.output + text.output + logout.output + after.output
    for secret in secrets_in({**first, "replaced": replaced}):
        assert secret not in outputs
        assert secret not in login_broker.log.read_text()


def test_an_expired_access_token_is_refreshed_transparently(
    login_broker, real_browser, terminal_env
):
    log_in_here(login_broker, real_browser, terminal_env)
    before = stored(terminal_env)
    (entry,) = before.values()
    expire_access_token(terminal_env)
    whoami = escrow(terminal_env, "whoami", "--json")
    assert whoami.exit_code == 0, whoami.output
    (renewed,) = stored(terminal_env).values()
    assert renewed["refresh_token"] != entry["refresh_token"]
    assert datetime.fromisoformat(renewed["expires_at"]) > datetime.now(UTC)
    # the spent refresh token, replayed, ends the login (a copy is in someone's hands)
    with pytest.raises(oauth.OAuthError) as refused:
        oauth.refresh(BrokerClient(login_broker.url), entry["refresh_token"])
    assert refused.value.error == "invalid_grant"
    assert me_status(login_broker.url, renewed["access_token"]) == 401
    for secret in secrets_in(before):
        assert secret not in whoami.output


def test_a_login_that_ended_at_the_broker_asks_to_log_in_again(
    login_broker, real_browser, terminal_env
):
    tokens = log_in_here(login_broker, real_browser, terminal_env)
    oauth.revoke(BrokerClient(login_broker.url), tokens["access_token"], "access_token")
    expire_access_token(terminal_env)
    whoami = escrow(terminal_env, "whoami")
    assert whoami.exit_code == 1
    assert "your login at" in whoami.stderr and "has ended" in whoami.stderr
    assert stored(terminal_env) == {}  # the dead login is forgotten


def test_other_client_commands_use_the_stored_login(login_broker, real_browser, terminal_env):
    log_in_here(login_broker, real_browser, terminal_env)
    result = escrow(
        terminal_env,
        "deposit",
        "--model",
        "acme-ai/m",
        "--version",
        "1",
        "--recipient-only",
        "--json",
    )
    assert result.exit_code == 1
    # authenticated as the person (who is no depositor), not refused for a missing token
    assert "needs the role depositor" in last_json(result.stdout)["detail"]


def test_a_login_denied_in_the_browser_stops_with_a_hint(login_broker, real_browser, terminal_env):
    with pytest.raises(oauth.OAuthError) as denied:
        log_in_here(login_broker, real_browser, terminal_env, action="deny")
    assert denied.value.error == "access_denied"
    assert "run `escrow login` again" in denied.value.hint


def test_polling_too_fast_slows_down_by_five_seconds(login_broker, real_browser):
    client = BrokerClient(login_broker.url)
    started = oauth.device_authorization(client)
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # does not wait: every poll comes too early
        waits.append(seconds)
        if len(waits) == 3:
            real_browser.answer(started["verification_uri_complete"])

    tokens = oauth.wait_for_approval(client, started, sleep=sleep)
    assert tokens["token_type"] == "Bearer"
    assert waits == [5, 5, 10]  # pending, then slow_down: the interval grows by 5 s


def test_whoami_without_a_login_says_how_to_log_in(login_broker, terminal_env):
    result = escrow(terminal_env, "whoami", login_broker.url, "--json")
    assert result.exit_code == 1
    assert last_json(result.stdout)["detail"] == f"not logged in to {login_broker.url}"
    assert f"escrow login {login_broker.url}" in result.stderr
