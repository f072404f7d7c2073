"""Pinned broker keys: trust on first use, a changed key stops the command loudly."""

from __future__ import annotations

import copy
import stat
from pathlib import Path

import pytest

from broker.client.pins import broker_id, check_keys, forget, pins_path
from broker.errors import TamperDetected

KEYS = {
    "manifest": {"key_id": "aaaa1111", "public_key": "pub-m"},
    "checkpoint": {"key_id": "bbbb2222", "public_key": "pub-c", "origin": "escrow/x",
                   "verifier_key": "escrow/x+01+AAAA"},
}


def test_first_contact_pins_the_keys_in_a_private_file(tmp_path: Path) -> None:
    assert check_keys("http://127.0.0.1:8080/", KEYS, tmp_path) == "pinned"
    assert stat.S_IMODE(pins_path(tmp_path).stat().st_mode) == 0o600
    assert check_keys("http://127.0.0.1:8080", KEYS, tmp_path) == "match"


def test_a_changed_manifest_key_is_refused_naming_both_key_ids(tmp_path: Path) -> None:
    check_keys("http://b:1", KEYS, tmp_path)
    rotated = copy.deepcopy(KEYS)
    rotated["manifest"] = {"key_id": "cccc3333", "public_key": "pub-other"}
    with pytest.raises(TamperDetected) as error:
        check_keys("http://b:1", rotated, tmp_path)
    assert "aaaa1111" in error.value.message and "cccc3333" in error.value.message
    assert "escrow pins forget http://b:1" in error.value.hint


def test_a_changed_checkpoint_origin_is_refused(tmp_path: Path) -> None:
    check_keys("http://b:1", KEYS, tmp_path)
    moved = copy.deepcopy(KEYS)
    moved["checkpoint"]["origin"] = "escrow/elsewhere"
    with pytest.raises(TamperDetected, match="origin"):
        check_keys("http://b:1", moved, tmp_path)


def test_forgetting_a_pin_lets_the_next_contact_pin_again(tmp_path: Path) -> None:
    check_keys("http://b:1", KEYS, tmp_path)
    assert forget("HTTP://B:1/api", tmp_path)
    rotated = copy.deepcopy(KEYS)
    rotated["manifest"]["key_id"] = "dddd"
    assert check_keys("http://b:1", rotated, tmp_path) == "pinned"


def test_pins_are_per_broker(tmp_path: Path) -> None:
    check_keys("http://b:1", KEYS, tmp_path)
    other = copy.deepcopy(KEYS)
    other["manifest"]["key_id"] = "eeee"
    assert check_keys("http://b:2", other, tmp_path) == "pinned"


def test_broker_ids_ignore_paths_and_credentials() -> None:
    assert broker_id("https://user:pw@Escrow.Example.org:8443/x/") == "https://escrow.example.org:8443"
