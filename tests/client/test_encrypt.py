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


def keys() -> tuple[bytes, bytes]:
    """A new file key and payload nonce."""
    return age.new_file_key(), os.urandom(age.NONCE_SIZE)


def plain(path: Path, file_key: bytes | None = None, nonce: bytes | None = None) -> PlainSource:
    if file_key is None or nonce is None:
        file_key, nonce = keys()
    return PlainSource.keyed(str(path), "f", file_key, nonce)


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
    file_key, nonce = keys()
    payload, _ = payload_of(plain(path, file_key, nonce), size)
    assert len(payload) == payload_size(size)
    reference = io.BytesIO()
    age.encrypt_payload(io.BytesIO(data), reference, file_key, nonce=nonce)
    assert payload == reference.getvalue()


def test_a_fingerprint_is_stable_and_changes_with_one_byte_of_the_part(tmp_path: Path) -> None:
    size = 3 * SMALL_PART
    data = bytearray(os.urandom(size))
    path = tmp_path / "f"
    path.write_bytes(data)
    source = plain(path)
    parts = plan_parts(size, SMALL_PART)
    before = [source.fingerprint(p) for p in parts]
    assert before == [source.fingerprint(p) for p in parts]
    assert before == payload_of(source, size)[1], "the send pass hands out the same ones"
    data[SMALL_PART + 12345] ^= 1  # part 2 only
    path.write_bytes(data)
    after = [source.fingerprint(p) for p in parts]
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]


def test_a_fingerprint_is_known_before_the_last_block_is_handed_out(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(9 * 1024 * 1024))  # three 4 MiB blocks
    source = plain(path)
    part = plan_parts(9 * 1024 * 1024)[0]
    seen: list[str] = []
    blocks = source.blocks(part, seen.append)
    next(blocks), next(blocks)
    assert seen == []
    next(blocks)
    assert len(seen) == 1


def test_a_fingerprint_is_keyed_per_file_and_per_part(tmp_path: Path) -> None:
    """The same plaintext in two parts, or under two file keys, has different fingerprints:
    each is a Poly1305 tag under a key of its own."""
    (tmp_path / "f").write_bytes(os.urandom(SMALL_PART) * 2)
    parts = plan_parts(2 * SMALL_PART, SMALL_PART)
    file_key, nonce = keys()
    one, two = plain(tmp_path / "f", file_key, nonce), plain(tmp_path / "f")
    assert one.fingerprint(parts[0]) != one.fingerprint(parts[1])
    assert one.fingerprint(parts[0]) != two.fingerprint(parts[0])
    assert one.fingerprint(parts[0]) == plain(tmp_path / "f", file_key, nonce).fingerprint(parts[0])


def test_the_send_pass_fingerprints_exactly_the_plaintext_it_encrypted(tmp_path: Path) -> None:
    """A file written while a part is encrypted: the fingerprint the send pass hands over is
    that of the plaintext its ciphertext holds (so the depositor's check compares what was
    sent), not of whatever the file held before or holds after."""
    block = 4 * 1024 * 1024
    original = os.urandom(3 * block)
    path = tmp_path / "f"
    path.write_bytes(original)
    file_key, nonce = keys()
    source = plain(path, file_key, nonce)
    part = plan_parts(3 * block)[0]
    before = source.fingerprint(part)
    seen: list[str] = []
    blocks = source.blocks(part, seen.append)
    ciphertext = bytes(next(blocks))
    with open(path, "r+b") as handle:  # block 1 was read already, block 2 not yet
        handle.seek(10)
        handle.write(b"\x00" * 8)
        handle.seek(block + 10)
        handle.write(b"\xff" * 8)
    ciphertext += b"".join(bytes(b) for b in blocks)
    decrypted = io.BytesIO()
    age.decrypt_payload(io.BytesIO(ciphertext), decrypted, file_key)
    sent = decrypted.getvalue()
    assert sent[:block] == original[:block] and sent[block:] != original[block:]
    (tmp_path / "sent").write_bytes(sent)
    assert seen == [plain(tmp_path / "sent", file_key, nonce).fingerprint(part)]
    assert seen[0] != before, "the change is seen before the last block leaves"


def test_a_pre_encrypted_file_yields_the_same_parts(tmp_path: Path) -> None:
    size = 2 * SMALL_PART + 777
    (tmp_path / "f").write_bytes(os.urandom(size))
    payload, _ = payload_of(plain(tmp_path / "f"), size)
    header = b"age-encryption.org/v1\n-> X25519 abc\n\n--- mac\n"
    (tmp_path / "f.age").write_bytes(header + payload)
    source = CipherSource(str(tmp_path / "f.age"), "f", len(header))
    again, prints = payload_of(source, size)
    assert again == payload
    assert prints == [source.fingerprint(p) for p in plan_parts(size, SMALL_PART)]


def test_a_pre_encrypted_parts_fingerprint_changes_with_its_tags(tmp_path: Path) -> None:
    """A part the lab's age made again (another key or plaintext) has other chunk tags. A
    ciphertext byte changed under an unchanged tag is damage, which the broker's verification
    refuses."""
    size = 2 * SMALL_PART
    (tmp_path / "f").write_bytes(os.urandom(size))
    payload = bytearray(payload_of(plain(tmp_path / "f"), size)[0])
    (tmp_path / "f.age").write_bytes(payload)
    source = CipherSource(str(tmp_path / "f.age"), "f", 0)
    parts = plan_parts(size, SMALL_PART)
    before = [source.fingerprint(p) for p in parts]
    payload[part_cipher_offset(parts[1]) + CHUNK_SIZE + 5] ^= 1  # part 2's first tag
    (tmp_path / "f.age").write_bytes(payload)
    after = [source.fingerprint(p) for p in parts]
    assert after[0] == before[0] and after[1] != before[1]


def test_part_offsets_count_the_nonce_and_the_tags() -> None:
    parts = plan_parts(3 * SMALL_PART, SMALL_PART)
    assert [part_cipher_offset(p) for p in parts] == [
        0, 16 + 4 * (CHUNK_SIZE + 16), 16 + 8 * (CHUNK_SIZE + 16)]


def test_a_file_that_shrank_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(SMALL_PART))
    source = plain(path)
    part = plan_parts(2 * SMALL_PART, SMALL_PART)[1]
    with pytest.raises(FileChanged, match="shorter"):
        list(source.blocks(part))


def test_a_file_that_grew_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(SMALL_PART + 1))
    source = plain(path)
    with pytest.raises(FileChanged, match="grew"):
        list(source.blocks(plan_parts(SMALL_PART, SMALL_PART)[0]))


def test_sha256_of_a_file_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 3)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(str(tmp_path / "f"), "f", len(data)) == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileChanged):
        sha256_file(str(tmp_path / "f"), "f", len(data) - 1)


def test_a_sources_repr_shows_no_key_material(tmp_path: Path) -> None:
    """A source may end up in a traceback or a log line: its fingerprint secret (and the file
    key behind the encryptor) must not be printed with it."""
    (tmp_path / "f").write_bytes(b"x")
    file_key, nonce = keys()
    source = plain(tmp_path / "f", file_key, nonce)
    shown = repr(source)
    assert str(tmp_path / "f") in shown
    assert repr(source.secret) not in shown and source.secret.hex() not in shown
    assert file_key.hex() not in shown and repr(file_key) not in shown
