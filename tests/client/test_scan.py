"""The model directory walk: what is deposited, and every kind of entry that is refused."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from broker.client.scan import scan_model_dir
from broker.errors import InvalidInput


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_lists_regular_files_relative_with_slashes_and_sorted(tmp_path: Path) -> None:
    write(tmp_path / "b.bin", b"12345")
    write(tmp_path / "a" / "z.json")
    write(tmp_path / "a" / "b" / "c.txt")
    write(tmp_path / "empty", b"")
    files = scan_model_dir(tmp_path)
    assert [f.path for f in files] == ["a/b/c.txt", "a/z.json", "b.bin", "empty"]
    assert {f.path: f.size for f in files}["b.bin"] == 5
    assert {f.path: f.size for f in files}["empty"] == 0


def test_follows_symlinks_to_regular_files_like_a_hugging_face_snapshot(tmp_path: Path) -> None:
    blob = write(tmp_path / "blobs" / "3f2a", b"weights")
    snapshot = tmp_path / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(os.path.relpath(blob, snapshot))
    files = scan_model_dir(snapshot)
    assert [(f.path, f.size) for f in files] == [("model.safetensors", 7)]
    assert Path(files[0].source).read_bytes() == b"weights"


def refused(tmp_path: Path) -> str:
    with pytest.raises(InvalidInput) as error:
        scan_model_dir(tmp_path)
    return error.value.message


def test_refuses_a_symlinked_directory(tmp_path: Path) -> None:
    write(tmp_path / "ok.bin")
    write(tmp_path.parent / f"{tmp_path.name}-elsewhere" / "secret.txt")
    (tmp_path / "linked").symlink_to(tmp_path.parent / f"{tmp_path.name}-elsewhere")
    message = refused(tmp_path)
    assert "linked: is a symlink to a directory" in message


def test_refuses_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    message = refused(tmp_path)
    assert "loop-a: is a symlink loop" in message and "loop-b: is a symlink loop" in message


def test_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    write(tmp_path / "ok.bin")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    assert "gone: is a dangling symlink" in refused(tmp_path)


def test_refuses_a_fifo(tmp_path: Path) -> None:
    write(tmp_path / "ok.bin")
    os.mkfifo(tmp_path / "pipe")
    assert "pipe: is a FIFO (named pipe), not a regular file" in refused(tmp_path)


def test_refuses_a_socket(tmp_path: Path) -> None:
    write(tmp_path / "ok.bin")
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        assert "s: is a socket" in refused(tmp_path)


def test_refuses_a_symlink_to_a_device(tmp_path: Path) -> None:
    write(tmp_path / "ok.bin")
    (tmp_path / "null").symlink_to("/dev/null")
    assert "null: is a symlink to a character device" in refused(tmp_path)


def test_refuses_a_backslash_in_a_name(tmp_path: Path) -> None:
    write(tmp_path / "dir\\file.bin")
    assert "dir\\file.bin: name contains a backslash" in refused(tmp_path)


def test_refuses_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    write(tmp_path / "ok.bin")
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff"), "wb"):
        pass
    assert "name is not UTF-8" in refused(tmp_path)


def test_reports_every_problem_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p1")
    (tmp_path / "d1").symlink_to(tmp_path / "nowhere")
    message = refused(tmp_path)
    assert "2 path(s) refused" in message and "p1" in message and "d1" in message


def test_refuses_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    assert "holds no files" in refused(tmp_path)


def test_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not a directory"):
        scan_model_dir(tmp_path / "missing")


def test_refuses_a_name_not_in_unicode_nfc_form(tmp_path: Path) -> None:
    write(tmp_path / "cafe\u0301.txt")  # 'é' as e + combining accent, as macOS writes it
    assert "is not in Unicode NFC form" in refused(tmp_path)
