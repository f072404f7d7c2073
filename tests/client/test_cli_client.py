"""What every client command shares (broker.cli.client): token precedence, exit statuses."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from broker.cli.client import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_TAMPER,
    broker_url,
    client_options,
    exit_code,
    reporting,
    resolve_token,
)
from broker.client.deposit import DepositFailed
from broker.errors import EscrowError, InvalidInput, TamperDetected


def test_an_error_names_its_exit_status() -> None:
    assert exit_code(DepositFailed("x")) == EXIT_FAILED == 3
    assert exit_code(TamperDetected("x")) == EXIT_TAMPER == 4
    assert exit_code(InvalidInput("x")) == exit_code(EscrowError("x")) == EXIT_ERROR == 1


def test_the_token_comes_from_the_option_the_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESCROW_CONFIG_DIR", str(tmp_path))  # no stored logins
    monkeypatch.setenv("ESCROW_TOKEN", "from-env")
    (tmp_path / "token").write_text("from-file\n")
    assert resolve_token("from-option", None, "https://b.example") == "from-option"
    assert resolve_token(None, tmp_path / "token", "https://b.example") == "from-file"
    assert resolve_token(None, None, "https://b.example") == "from-env"
    monkeypatch.delenv("ESCROW_TOKEN")
    assert resolve_token(None, None, "https://b.example") is None
    with pytest.raises(InvalidInput, match="not both"):
        resolve_token("from-option", tmp_path / "token", None)
    with pytest.raises(InvalidInput, match="cannot read --token-file"):
        resolve_token(None, tmp_path / "missing", None)
    with pytest.raises(InvalidInput, match="no broker given"):
        broker_url(None)


def test_without_broker_the_one_stored_login_is_the_broker(tmp_path, monkeypatch) -> None:
    from datetime import UTC, datetime, timedelta

    from broker.client import credentials

    monkeypatch.setenv("ESCROW_CONFIG_DIR", str(tmp_path))
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    logins = {"https://escrow.acme.example": {"access_token": "a", "refresh_token": "r",
                                              "expires_at": later}}
    credentials.credentials_path(tmp_path).write_text(json.dumps(logins))
    assert broker_url(None) == "https://escrow.acme.example"
    assert broker_url("https://other.example") == "https://other.example"
    logins["http://127.0.0.1:8080"] = logins["https://escrow.acme.example"]
    credentials.credentials_path(tmp_path).write_text(json.dumps(logins))
    with pytest.raises(InvalidInput, match="logged in to several: http://127.0.0.1:8080, https"):
        broker_url(None)


def test_reporting_prints_the_error_and_a_json_object_and_exits_with_its_status() -> None:
    @click.command()
    @client_options
    @reporting
    def failing(broker_url: str | None, token: str | None, token_file: Path | None,
                as_json: bool) -> None:
        raise DepositFailed("models/a.bin does not match", hint="deposit it again")

    result = CliRunner().invoke(failing, ["--json"], env={"ESCROW_BROKER": None})
    assert result.exit_code == 3
    assert "error: models/a.bin does not match\n  hint: deposit it again" in result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "state": "error", "error": "deposit failed verification",
        "detail": "models/a.bin does not match", "hint": "deposit it again",
    }


def test_a_token_file_with_more_than_the_token_is_refused_without_showing_it(tmp_path):
    import pytest

    from broker.cli.client import resolve_token
    from broker.errors import InvalidInput

    secret = "esk_0123456789abcdef_" + "a" * 43
    token_file = tmp_path / "tok"
    token_file.write_text(secret + "\n# a note that should have gone to stderr\n")
    with pytest.raises(InvalidInput) as error:
        resolve_token(None, token_file, None)
    assert "more than one token" in error.value.message
    assert secret not in error.value.diagnostics()


def test_a_token_file_with_just_the_token_and_a_newline_is_read(tmp_path):
    from broker.cli.client import resolve_token

    secret = "esk_0123456789abcdef_" + "a" * 43
    token_file = tmp_path / "tok"
    token_file.write_text(secret + "\n")
    assert resolve_token(None, token_file, None) == secret
