"""`escrow admin key split` / `join`: SLIP-0039 trustee shares of the local master key. Any M of
N rebuild it; too few, mixed splits and typos are refused with a message naming the share (by
file or line, never by its words)."""

from __future__ import annotations

import itertools
import re
import stat
import subprocess
from pathlib import Path

import pytest
from live import ESCROW_BIN
from shamir_mnemonic.wordlist import WORDLIST
from sqlalchemy import select

from broker.adapters.custody.local import LocalCustody, generate_key, key_id_of, read_key_file
from broker.adapters.custody.shares import (
    ShareText,
    combine_shares,
    format_share,
    parse_share_file,
    split_secret,
)
from broker.adapters.db.models import AuditEvent
from broker.errors import Conflict, InvalidInput
from broker.services.master_key_shares import join_master_key, split_master_key, write_share_files

from .test_key_rotation_cli import cli_env

KEY = bytes(range(32))


def shares_of(key: bytes, n: int = 5, m: int = 3) -> list[ShareText]:
    return [ShareText(f"share-{i}.txt", words) for i, words in enumerate(split_secret(key, n, m))]


def test_any_three_of_five_shares_rebuild_the_key() -> None:
    shares = shares_of(KEY)
    assert all(len(s.words.split()) == 33 for s in shares)
    for chosen in itertools.combinations(shares, 3):
        assert combine_shares(list(chosen)) == KEY


def test_more_shares_than_needed_also_rebuild_it() -> None:
    assert combine_shares(shares_of(KEY)) == KEY


@pytest.mark.parametrize("given", [[], [0], [0, 1], [0, 1, 1, 0]])
def test_too_few_shares_are_refused(given: list[int]) -> None:
    shares = shares_of(KEY)
    with pytest.raises(InvalidInput, match="too few shares|no shares") as raised:
        combine_shares([shares[i] for i in given])
    if given:
        assert f"got {len(set(given))}" in raised.value.message
        assert "more trustee share" in raised.value.hint


def test_shares_of_different_splits_are_refused() -> None:
    first, second = shares_of(KEY), shares_of(KEY)
    with pytest.raises(InvalidInput, match="share-0.txt and share-2.txt are of different splits"):
        combine_shares([first[0], first[1], second[2]])


def test_shares_of_different_keys_are_refused() -> None:
    first, other = shares_of(KEY), shares_of(generate_key())
    with pytest.raises(InvalidInput, match="different splits"):
        combine_shares([first[0], first[1], other[2]])


def swap_word(words: str, position: int) -> str:
    """The share with the word at `position` replaced by its neighbour in the word list."""
    listed = words.split()
    listed[position] = WORDLIST[(WORDLIST.index(listed[position]) + 1) % len(WORDLIST)]
    return " ".join(listed)


@pytest.mark.parametrize("position", [0, 5, 16, 32])
def test_a_mistyped_word_fails_the_checksum(position: int) -> None:
    shares = shares_of(KEY)
    typo = ShareText("share-1.txt", swap_word(shares[1].words, position))
    with pytest.raises(InvalidInput, match="share from share-1.txt fails its checksum") as raised:
        combine_shares([shares[0], typo, shares[2]])
    # The share's words are its secret: none may be named (as a word: "type" is in "mistyped").
    said = set(re.findall(r"[a-z]+", raised.value.diagnostics()))
    assert typo.words.split()[position] not in said


def test_a_word_not_in_the_list_is_named_by_position_not_spelled_out() -> None:
    shares = shares_of(KEY)
    listed = shares[2].words.split()
    listed[7] = listed[7][:-1] + "q"
    typo = ShareText("stdin line 3", " ".join(listed))
    with pytest.raises(InvalidInput, match="line 3: word 8 is not a SLIP-0039 word") as raised:
        combine_shares([shares[0], shares[1], typo])
    assert listed[7] not in raised.value.diagnostics()


def test_a_missing_word_is_caught() -> None:
    shares = shares_of(KEY)
    short = ShareText("share-1.txt", " ".join(shares[1].words.split()[:-1]))
    with pytest.raises(InvalidInput, match="share from share-1.txt"):
        combine_shares([shares[0], short, shares[2]])


@pytest.mark.parametrize(("n", "m"), [(5, 1), (3, 4), (17, 3), (1, 1), (0, 0)])
def test_impossible_splits_are_refused(n: int, m: int) -> None:
    with pytest.raises(InvalidInput, match=f"cannot split into {n} shares with threshold {m}"):
        split_secret(KEY, n, m)


def test_a_share_file_keeps_its_key_id_and_words() -> None:
    [words] = split_secret(KEY, 2, 2)[:1]
    text = format_share(key_id_of(KEY), words, 1, 2, 2)
    parsed = parse_share_file("share-1-of-2.txt", text)
    assert parsed == ShareText("share-1-of-2.txt", words, key_id_of(KEY))
    wrapped = text.replace(words, "\n".join(words.split()))  # a trustee wrote one word per line
    assert parse_share_file("x", wrapped).words == words


# --- split and join the master key file -------------------------------------------------------


def split_files(escrow, tmp_path: Path, n: int = 5, m: int = 3) -> list[Path]:
    with escrow.uow() as uow:
        split = split_master_key(uow, escrow.settings, n, m)
    return write_share_files(tmp_path / "shares", split)


def read_shares(paths: list[Path]) -> list[ShareText]:
    return [parse_share_file(p.name, p.read_text()) for p in paths]


def test_split_then_join_rebuilds_the_key_file(escrow, tmp_path: Path):
    paths = split_files(escrow, tmp_path)
    assert [p.name for p in paths] == [f"share-{i}-of-5.txt" for i in range(1, 6)]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in paths)

    rebuilt = tmp_path / "rebuilt" / "master.key"
    joined = join_master_key(read_shares([paths[4], paths[0], paths[2]]), rebuilt)
    assert joined.written and read_key_file(rebuilt) == read_key_file(escrow.settings.key_file)
    assert stat.S_IMODE(rebuilt.stat().st_mode) == 0o600
    assert LocalCustody(rebuilt).key_id == joined.key_id


def test_the_split_is_audited_without_its_shares(escrow, tmp_path: Path):
    paths = split_files(escrow, tmp_path)
    with escrow.uow() as uow:
        [leaf] = uow.session.scalars(
            select(AuditEvent.leaf).where(AuditEvent.action == "custody.key_split")
        )
    key_id = key_id_of(read_key_file(escrow.settings.key_file))
    assert f"local:{key_id}".encode() in leaf and b'"threshold":3' in leaf
    for share in read_shares(paths):
        assert share.words.encode() not in leaf


def test_join_leaves_a_key_file_holding_the_same_key_alone(escrow, tmp_path: Path):
    paths = split_files(escrow, tmp_path)
    before = escrow.settings.key_file.read_bytes()
    joined = join_master_key(read_shares(paths[:3]), escrow.settings.key_file)
    assert not joined.written and escrow.settings.key_file.read_bytes() == before


def test_join_refuses_to_overwrite_a_different_key_file_unless_told(escrow, tmp_path: Path):
    paths = split_files(escrow, tmp_path)
    other = tmp_path / "other" / "master.key"
    LocalCustody.create_key_file(other)
    different = other.read_bytes()
    with pytest.raises(Conflict, match=f"key file {other} exists and holds key") as raised:
        join_master_key(read_shares(paths[:3]), other)
    assert "--replace" in raised.value.hint and other.read_bytes() == different

    joined = join_master_key(read_shares(paths[:3]), other, replace=True)
    assert joined.moved_aside is not None and joined.moved_aside.read_bytes() == different
    assert read_key_file(other) == read_key_file(escrow.settings.key_file)


def test_a_share_whose_key_id_line_disagrees_is_refused(escrow, tmp_path: Path):
    shares = read_shares(split_files(escrow, tmp_path)[:3])
    edited = [ShareText(s.source, s.words, "0" * 16) for s in shares]
    with pytest.raises(InvalidInput, match="say they are of key 0000000000000000"):
        join_master_key(edited, tmp_path / "rebuilt.key")
    assert not (tmp_path / "rebuilt.key").exists()


def test_split_refuses_when_the_key_is_in_kms(escrow, tmp_path: Path):
    settings = escrow.settings.with_overrides(key_custody="aws-kms", kms_key_id="alias/x")
    with escrow.uow() as uow, pytest.raises(InvalidInput, match="held by AWS KMS"):
        split_master_key(uow, settings, 5, 3)


def test_share_files_are_never_overwritten(escrow, tmp_path: Path):
    split_files(escrow, tmp_path)
    with pytest.raises(Conflict, match="share-1-of-5.txt already exists"):
        split_files(escrow, tmp_path)


# --- the commands ------------------------------------------------------------------------------


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [ESCROW_BIN, "admin", "key", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_commands_split_and_join_from_files_and_stdin(escrow, tmp_path: Path):
    env = cli_env(escrow.settings)
    split = run(env, "split", "--shares", "4", "--threshold", "2", "--out", str(tmp_path / "s"))
    assert split.returncode == 0, split.stderr
    assert "any 2 rebuild it" in split.stderr
    files = sorted((tmp_path / "s").iterdir())
    assert len(files) == 4

    from_files = run(
        env, "join", "--key-file", str(tmp_path / "a.key"), str(files[3]), str(files[1])
    )
    assert from_files.returncode == 0, from_files.stderr
    assert read_key_file(tmp_path / "a.key") == read_key_file(escrow.settings.key_file)

    lines = "\n".join(parse_share_file("x", f.read_text()).words for f in files[:2])
    from_stdin = run(env, "join", "--key-file", str(tmp_path / "b.key"), stdin=lines + "\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert read_key_file(tmp_path / "b.key") == read_key_file(escrow.settings.key_file)


def test_the_join_command_says_what_is_wrong(escrow, tmp_path: Path):
    env = cli_env(escrow.settings)
    printed = run(env, "split", "--shares", "3", "--threshold", "3")
    assert printed.returncode == 0, printed.stderr
    words = [parse_share_file("x", block).words for block in printed.stdout.split("\n\n")]
    assert len(words) == 3

    too_few = run(env, "join", "--key-file", str(tmp_path / "k"), stdin="\n".join(words[:2]))
    assert too_few.returncode == 1
    assert "error: too few shares: this split needs 3 different shares, got 2" in too_few.stderr

    typo = run(
        env,
        "join",
        "--key-file",
        str(tmp_path / "k"),
        stdin="\n".join([words[0], swap_word(words[1], 10), words[2]]),
    )
    assert typo.returncode == 1
    assert "share from stdin line 2 fails its checksum" in typo.stderr
    assert not (tmp_path / "k").exists()
