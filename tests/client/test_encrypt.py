"""Part encryption: parts concatenate to a valid age payload, fingerprints track plaintext."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from broker import age
from broker.client.encrypt import (
    CipherSource,
    FileChanged,
    PlainSource,
    part_cipher_offset,
    sha256_file,
)
from broker.domain.parts import CHUNK_SIZE, payload_size, plan_parts

SMALL_PART = 4 * CHUNK_SIZE  # 256 KiB parts keep these tests fast


def keyed() -> tuple[bytes, age.PayloadEncryptor]:
    file_key = age.new_file_key()
    return file_key, age.PayloadEncryptor(file_key, os.urandom(age.NONCE_SIZE))


def encryptor() -> age.PayloadEncryptor:
    return keyed()[1]


def payload_of(source: PlainSource | CipherSource, size: int) -> tuple[bytes, list[str]]:
    chunks, prints = [], []
    for part in plan_parts(size, SMALL_PART):
        data = b"".join(bytes(b) for b in source.blocks(part, prints.append))
        assert len(data) == part.cipher_size
        chunks.append(data)
    return b"".join(chunks), prints


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, SMALL_PART, SMALL_PART + 1,
                                  3 * SMALL_PART - 5, 70 * CHUNK_SIZE + 3])
def test_parts_concatenate_to_the_age_payload_of_the_file(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    file_key, enc = keyed()
    payload, _ = payload_of(PlainSource(str(path), "f", enc), size)
    assert len(payload) == payload_size(size)
    reference = io.BytesIO()
    age.encrypt_payload(io.BytesIO(data), reference, file_key, nonce=enc.nonce)
    assert payload == reference.getvalue()


def test_a_fingerprint_is_stable_and_changes_with_one_byte_of_the_part(tmp_path: Path) -> None:
    size = 3 * SMALL_PART
    data = bytearray(os.urandom(size))
    path = tmp_path / "f"
    path.write_bytes(data)
    source = PlainSource(str(path), "f", encryptor())
    parts = plan_parts(size, SMALL_PART)
    before = [source.fingerprint(p) for p in parts]
    assert before == [source.fingerprint(p) for p in parts]
    data[SMALL_PART + 12345] ^= 1  # part 2 only
    path.write_bytes(data)
    after = [source.fingerprint(p) for p in parts]
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]


def test_a_fingerprint_is_known_before_the_last_block_is_handed_out(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(9 * 1024 * 1024))  # three 4 MiB blocks
    source = PlainSource(str(path), "f", encryptor())
    part = plan_parts(9 * 1024 * 1024)[0]
    seen: list[str] = []
    blocks = source.blocks(part, seen.append)
    next(blocks), next(blocks)
    assert seen == []
    next(blocks)
    assert len(seen) == 1


def test_a_pre_encrypted_file_yields_the_same_parts_and_fingerprints(tmp_path: Path) -> None:
    size = 2 * SMALL_PART + 777
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    enc = encryptor()
    payload, prints = payload_of(PlainSource(str(tmp_path / "f"), "f", enc), size)
    header = b"age-encryption.org/v1\n-> X25519 abc\n\n--- mac\n"
    (tmp_path / "f.age").write_bytes(header + payload)
    again, prints_again = payload_of(CipherSource(str(tmp_path / "f.age"), "f", len(header)), size)
    assert again == payload and prints_again == prints


def test_part_offsets_count_the_nonce_and_the_tags() -> None:
    parts = plan_parts(3 * SMALL_PART, SMALL_PART)
    assert [part_cipher_offset(p) for p in parts] == [
        0, 16 + 4 * (CHUNK_SIZE + 16), 16 + 8 * (CHUNK_SIZE + 16)]


def test_a_file_that_shrank_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(SMALL_PART))
    source = PlainSource(str(path), "f", encryptor())
    part = plan_parts(2 * SMALL_PART, SMALL_PART)[1]
    with pytest.raises(FileChanged, match="shorter"):
        list(source.blocks(part))


def test_a_file_that_grew_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(SMALL_PART + 1))
    source = PlainSource(str(path), "f", encryptor())
    with pytest.raises(FileChanged, match="grew"):
        list(source.blocks(plan_parts(SMALL_PART, SMALL_PART)[0]))


def test_sha256_of_a_file_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 3)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(str(tmp_path / "f"), "f", len(data)) == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileChanged):
        sha256_file(str(tmp_path / "f"), "f", len(data) - 1)
