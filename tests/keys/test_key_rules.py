"""The rules of researcher keys that need no database: recipients, responses, fresh logins."""

import base64
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from broker import age
from broker.domain.principals import Principal, service_token
from broker.errors import InvalidInput, Unauthorized
from broker.services.keys import (
    LoginTooOld,
    canonical_recipient,
    challenge_text,
    decode_response,
    fingerprint,
    parse_key,
    require_recent_login,
    secret_of_challenge,
)


@pytest.mark.parametrize("recipient, expected", [
    ("", "missing"),
    ("   ", "missing"),
    ("age1qqqqqqqqqqqqqqqqqqqq", "Bech32"),
    ("age1pq1notakey", "Bech32"),
    ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ", "ssh-ed25519"),
    ("ssh-ed25519 AAAAnotbase64!", "base64"),
    ("AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ", "secret key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "not a recognised recipient"),
    ("hello", "not a recognised recipient"),
])
def test_anything_but_an_age_hybrid_or_ssh_ed25519_key_is_refused(recipient, expected):
    with pytest.raises(InvalidInput) as refused:
        parse_key(recipient)
    assert expected in refused.value.message + refused.value.hint
    assert "QQQQQQQQ" not in refused.value.message + refused.value.hint  # secrets not echoed


def test_two_keys_on_two_lines_are_refused():
    two = "\n".join(age.generate_x25519_identity().to_recipient().encode() for _ in range(2))
    with pytest.raises(InvalidInput, match="one key on one line"):
        parse_key(two)


@pytest.mark.parametrize("make, key_type", [
    (age.generate_x25519_identity, "x25519"),
    (age.generate_hybrid_identity, "mlkem768x25519"),
])
def test_age_keys_are_typed_by_their_recipient(make, key_type):
    recipient = make().to_recipient().encode()
    assert parse_key(recipient)[1] == key_type
    assert fingerprint(recipient).startswith("SHA256:")


def test_an_ssh_key_is_stored_without_comment_and_fingerprinted_like_ssh_keygen(ssh_key):
    line = ssh_key.with_suffix(".pub").read_text()
    recipient, key_type = parse_key(line)
    assert key_type == "ssh-ed25519"
    stored = canonical_recipient(recipient)
    assert stored == " ".join(line.split()[:2])
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(ssh_key.with_suffix(".pub"))],
                            capture_output=True, text=True, check=True).stdout
    assert fingerprint(stored) == listed.split()[1]


SECRET = bytes(range(32))


@pytest.mark.parametrize("response", [
    SECRET.hex(),
    SECRET.hex().upper(),
    f"  {SECRET.hex()}\n",
    base64.b64encode(SECRET).decode(),
    base64.b64encode(SECRET).decode().rstrip("="),
    base64.urlsafe_b64encode(SECRET).decode(),
])
def test_the_secret_may_be_sent_in_hex_or_base64(response):
    assert decode_response(response) == SECRET


@pytest.mark.parametrize("response", ["", "00" * 31, "00" * 33, "zz" * 32, "AAAA", None, 42,
                                      base64.b64encode(SECRET + b"x").decode()])
def test_anything_else_is_no_secret(response):
    assert decode_response(response) is None


def test_a_decrypted_challenge_says_what_it_is_and_carries_the_secret():
    text = challenge_text("rk_0123456789abcdef", 7, "weights-escrow/broker.example",
                          datetime(2026, 5, 1, 12, 0, tzinfo=UTC), SECRET)
    assert text.startswith("weights-escrow proof of possession\n")
    assert "key: rk_0123456789abcdef\n" in text
    assert secret_of_challenge(text) == SECRET.hex()


def person(minutes_ago: float | None) -> Principal:
    auth_time = None if minutes_ago is None else datetime.now(UTC) - timedelta(
        minutes=minutes_ago)
    return Principal(kind="user", id="7", auth_time=auth_time, session_id="s")


@pytest.mark.parametrize("minutes_ago", [0, 4.5])
def test_a_login_of_the_last_five_minutes_is_fresh(minutes_ago):
    require_recent_login(person(minutes_ago), "keys.manage")


@pytest.mark.parametrize("minutes_ago", [5.5, 600, None])
def test_an_older_login_or_one_without_auth_time_is_not(minutes_ago):
    with pytest.raises(LoginTooOld) as refused:
        require_recent_login(person(minutes_ago), "keys.manage")
    assert refused.value.status == 401
    assert "max_age=300" in refused.value.hint


def test_a_service_token_is_no_person():
    with pytest.raises(Unauthorized):
        require_recent_login(service_token("t", "acme-ai", "depositor"), "keys.manage")
