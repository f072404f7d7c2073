"""Registering files made by the plain age tool: sums, names, headers and payload sizes."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from broker import age
from broker.client.preencrypted import read_sha256sums, scan_pre_encrypted
from broker.errors import InvalidInput


def encrypt_to(path: Path, data: bytes, recipient: age.Recipient) -> None:
    out = io.BytesIO()
    age.encrypt(io.BytesIO(data), out, [recipient])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue())


def test_sha256sum_output_is_read_in_text_and_binary_mode(tmp_path: Path) -> None:
    a, b = "a" * 64, "B" * 64
    (tmp_path / "SUMS").write_text(f"{a}  ./w.bin\n{b} *sub/x y.json\n\n")
    assert read_sha256sums(tmp_path / "SUMS") == {"w.bin": a, "sub/x y.json": "b" * 64}


def test_a_line_that_is_not_sha256sum_output_is_refused_with_its_number(tmp_path) -> None:
    (tmp_path / "SUMS").write_text(f"{'a' * 64}  ok\nmd5 stuff\n")
    with pytest.raises(InvalidInput, match="line 2"):
        read_sha256sums(tmp_path / "SUMS")


def test_age_files_are_split_into_header_and_payload(tmp_path: Path) -> None:
    identity = age.generate_x25519_identity()
    data = os.urandom(200_000)
    encrypt_to(tmp_path / "enc" / "sub" / "w.bin.age", data, identity.to_recipient())
    encrypt_to(tmp_path / "enc" / "empty.age", b"", identity.to_recipient())
    (tmp_path / "SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  sub/w.bin\n"
                                   f"{hashlib.sha256(b'').hexdigest()}  empty\n")
    items = scan_pre_encrypted(tmp_path / "enc", tmp_path / "SUMS")
    assert [(i.path, i.plain_size) for i in items] == [("empty", 0), ("sub/w.bin", 200_000)]
    raw = (tmp_path / "enc" / "sub" / "w.bin.age").read_bytes()
    item = items[1]
    assert raw[: item.payload_offset] == item.header and item.header.endswith(b"\n")
    assert age.parse_header(item.header).stanza_types == ("X25519",)


def test_files_without_a_sum_or_not_age_or_armored_are_refused_together(tmp_path) -> None:
    recipient = age.generate_x25519_identity().to_recipient()
    encrypt_to(tmp_path / "enc" / "nosum.age", b"x", recipient)
    (tmp_path / "enc" / "plain.txt").write_text("not encrypted")
    armored = io.BytesIO()
    age.encrypt(io.BytesIO(b"x"), armored, [recipient], armor=True)
    (tmp_path / "enc" / "armored.age").write_bytes(armored.getvalue())
    (tmp_path / "SUMS").write_text(f"{'0' * 64}  armored\n")
    with pytest.raises(InvalidInput) as error:
        scan_pre_encrypted(tmp_path / "enc", tmp_path / "SUMS")
    message = error.value.message
    assert "nosum: has no line in" in message
    assert "plain.txt: does not end in .age" in message
    assert "armored.age: not a binary age file" in message


def test_a_payload_no_plaintext_can_have_is_refused(tmp_path: Path) -> None:
    encrypt_to(tmp_path / "enc" / "w.age", os.urandom(65536),
               age.generate_x25519_identity().to_recipient())
    path = tmp_path / "enc" / "w.age"
    path.write_bytes(path.read_bytes() + b"extra")  # other truncations fail at verification
    (tmp_path / "SUMS").write_text(f"{'0' * 64}  w\n")
    with pytest.raises(InvalidInput, match="truncated or has extra bytes"):
        scan_pre_encrypted(tmp_path / "enc", tmp_path / "SUMS")
