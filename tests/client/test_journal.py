"""The resume journal: private, atomic, and holding what a resumed run needs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from broker.client import local
from broker.client.journal import DoneEntry, FileEntry, Journal
from broker.errors import EscrowError


def entry(index: int = 0) -> FileEntry:
    return FileEntry(index=index, path="w.bin", size=10, mtime_ns=123, inode=7,
                     part_size=64 << 20, header=b"age-encryption.org/v1\n...",
                     recipients=["age1xyz"], file_key=bytes(range(16)), nonce=bytes(16))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_journal_is_private_in_a_private_directory(tmp_path: Path) -> None:
    journal = Journal.open("dep1", "http://b", tmp_path)
    journal.start_file(entry())
    assert mode(journal.path) == 0o600
    assert mode(journal.path.parent) == 0o700
    assert journal.path == tmp_path / "journal" / "dep1.json"


def test_journal_round_trips_keys_headers_and_fingerprints(tmp_path: Path) -> None:
    journal = Journal.open("dep1", "http://b", tmp_path)
    journal.start_file(entry())
    journal.record_part(0, 2, "ab" * 32)
    journal.record_part(0, 1, "cd" * 32)
    journal.close()
    again = Journal.open("dep1", "http://b", tmp_path)
    assert again.files[0] == FileEntry(**{**vars(entry()), "fingerprints": {1: "cd" * 32,
                                                                            2: "ab" * 32}})


def test_finishing_a_file_forgets_its_key_and_remembers_its_hash(tmp_path: Path) -> None:
    journal = Journal.open("dep1", "http://b", tmp_path)
    journal.start_file(entry())
    journal.finish_file(0, "w.bin", DoneEntry(10, 123, 7, "ef" * 32))
    journal.close()
    text = journal.path.read_text()
    assert bytes(range(16)).hex() not in text
    assert Journal.open("dep1", "http://b", tmp_path).done["w.bin"].sha256 == "ef" * 32


def test_deleting_the_journal_removes_the_file(tmp_path: Path) -> None:
    journal = Journal.open("dep1", "http://b", tmp_path)
    journal.start_file(entry())
    journal.delete()
    assert not journal.path.exists()
    assert Journal.open("dep1", "http://b", tmp_path).files == {}


def test_a_crash_while_writing_leaves_the_old_journal_intact(tmp_path: Path, monkeypatch) -> None:
    journal = Journal.open("dep1", "http://b", tmp_path)
    journal.start_file(entry())
    before = journal.path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(local.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        journal.record_part(0, 1, "00" * 32)
    assert journal.path.read_bytes() == before
    left = sorted(p.name for p in journal.path.parent.iterdir())
    assert left == ["dep1.json", "dep1.lock"]  # no temp file left


def test_write_private_never_exposes_the_file_even_with_a_permissive_umask(tmp_path) -> None:
    old = os.umask(0)
    try:
        local.write_private(tmp_path / "d" / "f", b"secret")
    finally:
        os.umask(old)
    assert mode(tmp_path / "d" / "f") == 0o600 and mode(tmp_path / "d") == 0o700


def test_a_damaged_journal_is_reported_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "journal" / "dep1.json"
    local.write_private(path, b"{not json")
    with pytest.raises(Exception, match="damaged") as error:
        Journal.open("dep1", "http://b", tmp_path)
    assert "remove it" in error.value.hint


def test_a_journal_of_another_deposit_is_refused(tmp_path: Path) -> None:
    local.write_private(tmp_path / "journal" / "dep1.json",
                        json.dumps({"version": 1, "deposit_id": "other", "files": {}}).encode())
    with pytest.raises(Exception, match="another version or deposit"):
        Journal.open("dep1", "http://b", tmp_path)


def test_deposit_ids_cannot_name_other_paths(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not valid"):
        Journal.open("../pins", "http://b", tmp_path)


def test_a_second_run_on_the_same_deposit_is_refused_while_the_first_holds_it(tmp_path) -> None:
    first = Journal.open("dep1", "http://b", tmp_path)
    with pytest.raises(Exception, match="already working on deposit dep1"):
        Journal.open("dep1", "http://b", tmp_path)
    first.close()
    Journal.open("dep1", "http://b", tmp_path).close()  # released: a later run may resume


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_journal_keeps_finished_files_but_no_keys(tmp_path: Path, version: int) -> None:
    """Version 1 journaled fingerprints only after a part was encrypted, so its keys may have
    encrypted a part with no fingerprint; version 2's fingerprints were of another kind. Such
    files start over with new keys."""
    journal = Journal.open("dep1", "http://b", tmp_path)
    journal.start_file(entry())
    journal.finish_file(1, "done.bin", DoneEntry(10, 123, 7, "ef" * 32))
    journal.close()
    data = json.loads(journal.path.read_text())
    data["version"] = version
    journal.path.write_text(json.dumps(data))
    again = Journal.open("dep1", "http://b", tmp_path)
    assert again.files == {}
    assert again.done["done.bin"].sha256 == "ef" * 32


def test_a_part_of_a_dropped_file_cannot_be_journaled(tmp_path: Path) -> None:
    """Once a file's key is dropped (its plaintext changed mid-send), no part of it may be
    recorded (and so sent) under that key any more."""
    journal = Journal.open("dep1", "http://b", tmp_path)
    journal.start_file(entry())
    journal.record_part(0, 1, "ab" * 32)
    journal.forget_file(0, "w.bin")
    with pytest.raises(EscrowError, match="its key was dropped"):
        journal.record_part(0, 2, "cd" * 32)
    journal.close()
    assert Journal.open("dep1", "http://b", tmp_path).files == {}


def test_the_upload_reference_round_trips(tmp_path: Path) -> None:
    journal = Journal.open("dep1", "http://b", tmp_path)
    journal.start_file(entry())
    journal.set_upload(0, "0123456789abcdef")
    journal.close()
    assert Journal.open("dep1", "http://b", tmp_path).files[0].upload == "0123456789abcdef"


def test_an_entrys_repr_shows_no_file_key(tmp_path: Path) -> None:
    """An entry may end up in a traceback or a log line; its file key must not."""
    shown = repr(entry())
    assert "w.bin" in shown
    assert bytes(range(16)).hex() not in shown and repr(bytes(range(16))) not in shown
