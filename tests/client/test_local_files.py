"""Client files under the config directory: absent is empty, damaged is a clear error."""

from __future__ import annotations

import pytest

from broker.client.local import read_json, write_private
from broker.errors import EscrowError


def test_an_absent_file_reads_as_empty(tmp_path):
    assert read_json(tmp_path / "pins.json", "pinned keys file", "x") == {}


def test_a_written_file_reads_back(tmp_path):
    write_private(tmp_path / "c.json", b'{"a": 1}')
    assert read_json(tmp_path / "c.json", "saved checkpoints file", "x") == {"a": 1}


def test_a_damaged_file_says_what_removing_it_loses(tmp_path):
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(EscrowError, match="saved checkpoints file .* is damaged") as raised:
        read_json(tmp_path / "c.json", "saved checkpoints file", "it forgets what you saw")
    assert "it forgets what you saw" in raised.value.hint
