"""The local store's space: planned uploads assemble in place (no second copy), a full disk or
quota is `StoreFull` (507), and a kill -9 during completion leaves no object or the whole one."""

from __future__ import annotations

import io
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from broker.adapters.objectstore.base import UploadedPart
from broker.adapters.objectstore.local import LocalStore
from broker.adapters.objectstore.rules import MIN_PART_SIZE
from broker.errors import InvalidInput, StoreFull

from .support import Clock, make_store_app

KEY = "deposits/d1/files/0.payload"
MiB = 1024 * 1024


def store_with_quota(base: Path, quota: int | None) -> LocalStore:
    return LocalStore(
        base / "objects",
        base / "staging",
        "http://broker.test",
        secrets.token_bytes(32),
        clock=Clock(),
        quota_bytes=quota,
    )


def plan(total: int, part: int) -> list[int]:
    """Part sizes like the deposit service's: equal parts, a smaller last one."""
    sizes = [part] * (total // part)
    if total % part:
        sizes.append(total % part)
    return sizes


def send(store: LocalStore, upload_id: str, number: int, data: bytes) -> UploadedPart:
    return store.write_part(KEY, upload_id, number, io.BytesIO(data), len(data))


def test_a_planned_upload_is_assembled_in_place(tmp_path: Path) -> None:
    store = store_with_quota(tmp_path, None)
    parts = [os.urandom(MIN_PART_SIZE + 16), os.urandom(MIN_PART_SIZE), b"last part"]
    upload_id = store.create_multipart(KEY, [len(p) for p in parts])
    data_file = store._staging / upload_id / "data"
    for number, data in reversed(list(enumerate(parts, 1))):  # any order
        send(store, upload_id, number, data)
    listed = store.list_parts(KEY, upload_id)
    assert [(p.number, p.size) for p in listed] == [(n, len(d)) for n, d in enumerate(parts, 1)]
    inode = data_file.stat().st_ino

    store.complete_multipart(KEY, upload_id, listed)

    assert store.get_bytes(KEY) == b"".join(parts)
    assert (store.objects_root / KEY).stat().st_ino == inode  # renamed, not copied
    assert list(store._staging.iterdir()) == []


def test_a_re_sent_planned_part_replaces_the_old_bytes_and_etag(tmp_path: Path) -> None:
    store = store_with_quota(tmp_path, None)
    upload_id = store.create_multipart(KEY, [4])
    first = send(store, upload_id, 1, b"aaaa")
    second = send(store, upload_id, 1, b"bbbb")

    assert store.list_parts(KEY, upload_id) == [second]
    with pytest.raises(InvalidInput, match="was not received"):
        store.complete_multipart(KEY, upload_id, [first])
    store.complete_multipart(KEY, upload_id, [second])
    assert store.get_bytes(KEY) == b"bbbb"


def test_a_planned_upload_refuses_parts_off_its_plan(tmp_path: Path) -> None:
    store = store_with_quota(tmp_path, None)
    upload_id = store.create_multipart(KEY, [MIN_PART_SIZE, 3])
    with pytest.raises(InvalidInput, match="part 2 .* is 4 bytes; the upload's plan says 3"):
        send(store, upload_id, 2, b"four")  # it would overwrite the next part
    with pytest.raises(InvalidInput, match="not planned"):
        send(store, upload_id, 3, b"x")
    short = send(store, upload_id, 2, b"en")  # kept, listed with its size, refused at the end
    assert store.list_parts(KEY, upload_id) == [short]
    first = send(store, upload_id, 1, os.urandom(MIN_PART_SIZE))
    with pytest.raises(InvalidInput, match="part 2 is 2 bytes, expected 3"):
        store.complete_multipart(KEY, upload_id, [first, short])
    last = send(store, upload_id, 2, b"end")
    with pytest.raises(InvalidInput, match="planned as 2 parts"):
        store.complete_multipart(KEY, upload_id, [last])  # part 1 left out
    with pytest.raises(InvalidInput, match="part 1 with ETag .* was not received"):
        store.complete_multipart(KEY, upload_id, [UploadedPart(1, 0, "0" * 32), last])
    assert store.head(KEY) is None


def test_completion_needs_no_second_copy_of_the_file(tmp_path: Path) -> None:
    """With a quota of Q, a file of 0.6 Q completes in place; the same file uploaded without a
    plan (parts concatenated into a new file, as before) needs 1.2 Q and fails as a full store."""
    quota = 20 * MiB
    size = 12 * MiB
    sizes = plan(size, MIN_PART_SIZE)
    planned = store_with_quota(tmp_path / "planned", quota)
    upload_id = planned.create_multipart(KEY, sizes)
    payload = os.urandom(size)
    offset = 0
    for number, length in enumerate(sizes, 1):
        send(planned, upload_id, number, payload[offset : offset + length])
        offset += length
    planned.complete_multipart(KEY, upload_id, planned.list_parts(KEY, upload_id))
    assert planned.get_bytes(KEY) == payload
    assert planned.usage() == size

    copied = store_with_quota(tmp_path / "copied", quota)
    upload_id = copied.create_multipart(KEY)
    offset = 0
    for number, length in enumerate(sizes, 1):
        send(copied, upload_id, number, payload[offset : offset + length])
        offset += length
    with pytest.raises(StoreFull, match="the object store is full: .*quota of 20971520 bytes"):
        copied.complete_multipart(KEY, upload_id, copied.list_parts(KEY, upload_id))
    assert copied.head(KEY) is None
    assert len(copied.list_parts(KEY, upload_id)) == len(sizes)  # kept for a retry


def test_a_write_past_the_quota_is_store_full_and_stores_nothing(tmp_path: Path) -> None:
    store = store_with_quota(tmp_path, 8 * MiB)
    upload_id = store.create_multipart(KEY, [MIN_PART_SIZE, MIN_PART_SIZE])
    send(store, upload_id, 1, os.urandom(MIN_PART_SIZE))

    with pytest.raises(StoreFull) as caught:
        send(store, upload_id, 2, os.urandom(MIN_PART_SIZE))
    assert caught.value.status == 507
    assert "ESCROW_LOCAL_STORE_QUOTA_BYTES" in caught.value.hint
    assert "went away" not in caught.value.message
    assert [p.number for p in store.list_parts(KEY, upload_id)] == [1]
    with pytest.raises(StoreFull):
        store.put_bytes("audit/checkpoints/1", b"x" * (4 * MiB))
    assert store.head("audit/checkpoints/1") is None
    assert "quota bytes used" in store.check()


def test_a_full_store_answers_507_problem_json_to_a_part_upload(tmp_path: Path) -> None:
    store = store_with_quota(tmp_path, 1 * MiB)
    client = make_store_app(store).test_client()
    upload_id = store.create_multipart(KEY, [2 * MiB])
    url = store.presign_upload_part(KEY, upload_id, 1, 600).url

    response = client.put(url.split("broker.test", 1)[1], data=b"x" * (2 * MiB))

    assert response.status_code == 507
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["title"] == "object store full"
    assert body["detail"].startswith("the object store is full")
    assert "free space" in body["hint"]


def test_a_real_full_filesystem_is_store_full(tmp_path: Path) -> None:
    """On a 4 MiB tmpfs (where this machine lets the tests mount one): ENOSPC from the kernel."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        store = store_with_quota(mount, None)
        upload_id = store.create_multipart(KEY, [6 * MiB])
        with pytest.raises(StoreFull, match="No space left on device"):
            send(store, upload_id, 1, os.urandom(6 * MiB))
        assert store.list_parts(KEY, upload_id) == []
        store.abort_multipart(KEY, upload_id)
        store.put_bytes("small", b"room again")  # aborting freed the space
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# -- kill -9 during completion -----------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from broker.adapters.objectstore.local import LocalStore

    base, upload_id, when = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    store = LocalStore(base / "objects", base / "staging", "http://x", b"k" * 32)
    real_rename = os.rename

    def rename(src, dst):
        if when == "after":
            real_rename(src, dst)
        (base / "at-rename").write_text(when)
        time.sleep(60)  # killed here

    os.rename = rename
    store.complete_multipart(sys.argv[4], upload_id, store.list_parts(sys.argv[4], upload_id))
    """
)


@pytest.mark.parametrize("when", ["before", "after"])
def test_kill_9_during_completion_leaves_no_object_or_the_whole_one(
    tmp_path: Path, when: str
) -> None:
    store = LocalStore(tmp_path / "objects", tmp_path / "staging", "http://x", b"k" * 32)
    parts = [os.urandom(MIN_PART_SIZE), os.urandom(1000)]
    upload_id = store.create_multipart(KEY, [len(p) for p in parts])
    for number, data in enumerate(parts, 1):
        send(store, upload_id, number, data)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), upload_id, when, KEY],
        cwd=Path(__file__).parents[2],
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "at-rename").exists():
            assert child.poll() is None, "the completing process ended early"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)

    if when == "before":
        assert store.head(KEY) is None  # no object, and the upload can still complete
    else:
        assert store.get_bytes(KEY) == b"".join(parts)  # the whole object, at once
    store.complete_multipart(KEY, upload_id, store.list_parts(KEY, upload_id))
    assert store.get_bytes(KEY) == b"".join(parts)
    assert list(store._staging.iterdir()) == []
