"""The local object store: keys stay inside its root, writes are atomic, multipart works as S3."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tracemalloc
from pathlib import Path

import pytest

from broker.adapters.objectstore import local_io, open_store
from broker.adapters.objectstore.base import UploadedPart
from broker.adapters.objectstore.local import OP_GET, OP_PUT_PART, LocalStore
from broker.adapters.objectstore.rules import MIN_PART_SIZE
from broker.errors import (
    BadRequest,
    ConfigError,
    Forbidden,
    InvalidInput,
    ObjectMissing,
    StorageError,
)

KEY = "deposits/d1/files/0.payload"

BAD_KEYS = [
    "",
    "..",
    ".",
    "../escape",
    "a/../../escape",
    "a/..",
    "./a",
    "a/./b",
    "/etc/passwd",
    "a\\b",
    "..\\escape",
    "a//b",
    "a/",
    "/",
    ".hidden",
    "a/.part-1.tmp",
    "a\x00b",
    "a\nb",
    "x" * 1025,
]

OPERATIONS = {
    "put_bytes": lambda store, key: store.put_bytes(key, b"x"),
    "get_bytes": lambda store, key: store.get_bytes(key),
    "open_read": lambda store, key: store.open_read(key),
    "head": lambda store, key: store.head(key),
    "delete": lambda store, key: store.delete(key),
    "create_multipart": lambda store, key: store.create_multipart(key),
    "presign_get": lambda store, key: store.presign_get(key, 60),
}


def upload_part(store: LocalStore, key: str, upload_id: str, number: int, data: bytes):
    return store.write_part(key, upload_id, number, io.BytesIO(data), len(data))


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())


# -- keys never leave the root -----------------------------------------------------------------


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_refuses_keys_that_leave_its_root(
    local_store: LocalStore, tmp_path: Path, key: str, operation: str
) -> None:
    with pytest.raises(InvalidInput, match="key"):
        OPERATIONS[operation](local_store, key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objects", "staging"]
    assert files_under(tmp_path) == []


def test_refuses_a_key_that_escapes_through_a_symlinked_prefix(
    local_store: LocalStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private").write_bytes(b"not yours")
    (local_store.objects_root / "deposits").symlink_to(outside)

    with pytest.raises(InvalidInput, match="symlink"):
        local_store.put_bytes("deposits/new", b"x")
    with pytest.raises(InvalidInput, match="symlink"):
        local_store.get_bytes("deposits/private")
    # A URL is signed for the key alone; the URL server refuses to serve through the symlink.
    local_store.presign_get("deposits/private", 60)
    with pytest.raises(InvalidInput, match="symlink"):
        local_store.object_file("deposits/private")
    assert files_under(outside) == ["private"]


def test_refuses_an_object_that_is_a_symlink(local_store: LocalStore, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"not yours")
    (local_store.objects_root / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(InvalidInput, match="symlink"):
        local_store.get_bytes("link")


# -- small objects -----------------------------------------------------------------------------


def test_put_get_head_delete_round_trip(local_store: LocalStore) -> None:
    local_store.put_bytes("deposits/d1/manifest.json", b"{}")

    assert local_store.get_bytes("deposits/d1/manifest.json") == b"{}"
    info = local_store.head("deposits/d1/manifest.json")
    assert info is not None and info.size == 2 and info.key == "deposits/d1/manifest.json"
    assert (local_store.objects_root / "deposits" / "d1" / "manifest.json").read_bytes() == b"{}"

    local_store.delete("deposits/d1/manifest.json")
    assert local_store.head("deposits/d1/manifest.json") is None


def test_a_missing_object_raises_object_missing_and_heads_as_none(
    local_store: LocalStore,
) -> None:
    with pytest.raises(ObjectMissing, match="does not exist"):
        local_store.get_bytes("nothing/here")
    with pytest.raises(ObjectMissing):
        local_store.open_read("nothing/here")
    assert local_store.head("nothing/here") is None
    local_store.delete("nothing/here")  # not an error, as in S3


def test_a_prefix_is_not_an_object(local_store: LocalStore) -> None:
    local_store.put_bytes("deposits/d1/manifest.json", b"{}")
    assert local_store.head("deposits/d1") is None
    with pytest.raises(ObjectMissing):
        local_store.get_bytes("deposits/d1")


def test_open_read_streams_the_object(local_store: LocalStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    local_store.put_bytes(KEY, data)
    chunks = []
    with local_store.open_read(KEY) as stream:
        while chunk := stream.read(1024 * 1024):
            chunks.append(chunk)
    assert b"".join(chunks) == data


def test_put_replaces_an_object_and_leaves_no_temp_file(local_store: LocalStore) -> None:
    local_store.put_bytes(KEY, b"old")
    local_store.put_bytes(KEY, b"new")
    assert local_store.get_bytes(KEY) == b"new"
    assert files_under(local_store.objects_root) == [KEY]


def test_a_failed_put_keeps_the_old_object(
    local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_store.put_bytes(KEY, b"old")

    def disk_full(fd: int, view: memoryview) -> None:
        os.write(fd, view[:1])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_io, "write_all", disk_full)
    with pytest.raises(StorageError, match="No space left"):
        local_store.put_bytes(KEY, b"new and longer")
    assert local_store.get_bytes(KEY) == b"old"
    assert files_under(local_store.objects_root) == [KEY]


def test_check_describes_the_store(local_store: LocalStore) -> None:
    assert local_store.check().startswith(f"local store {local_store.objects_root}")


# -- multipart ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parts() -> list[bytes]:
    return [os.urandom(MIN_PART_SIZE), os.urandom(MIN_PART_SIZE), b"the last part may be small"]


def test_multipart_round_trip(local_store: LocalStore, parts: list[bytes]) -> None:
    upload_id = local_store.create_multipart(KEY)
    for number, data in reversed(list(enumerate(parts, 1))):  # any order
        upload_part(local_store, KEY, upload_id, number, data)

    listed = local_store.list_parts(KEY, upload_id)
    assert [(p.number, p.size) for p in listed] == [(n, len(d)) for n, d in enumerate(parts, 1)]
    assert len({p.etag for p in listed}) == len(parts)  # each part version has its own ETag
    local_store.complete_multipart(KEY, upload_id, listed)

    assert local_store.get_bytes(KEY) == b"".join(parts)
    assert files_under(local_store.objects_root) == [KEY]
    assert list(local_store._staging.iterdir()) == []
    with pytest.raises(ObjectMissing):
        local_store.list_parts(KEY, upload_id)


def test_upload_ids_are_random(local_store: LocalStore) -> None:
    ids = {local_store.create_multipart(KEY) for _ in range(5)}
    assert len(ids) == 5
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_re_sent_part_replaces_the_old_one(local_store: LocalStore, parts: list[bytes]) -> None:
    upload_id = local_store.create_multipart(KEY)
    first = upload_part(local_store, KEY, upload_id, 1, b"first attempt")
    second = upload_part(local_store, KEY, upload_id, 1, b"second attempt")

    assert local_store.list_parts(KEY, upload_id) == [second]
    with pytest.raises(InvalidInput, match="was not received"):
        local_store.complete_multipart(KEY, upload_id, [first])
    local_store.complete_multipart(KEY, upload_id, [second])
    assert local_store.get_bytes(KEY) == b"second attempt"


def test_re_sending_the_same_bytes_keeps_one_part(local_store: LocalStore) -> None:
    upload_id = local_store.create_multipart(KEY)
    upload_part(local_store, KEY, upload_id, 1, b"same")
    upload_part(local_store, KEY, upload_id, 1, b"same")
    assert len(local_store.list_parts(KEY, upload_id)) == 1


def test_complete_is_atomic(
    local_store: LocalStore, parts: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    local_store.put_bytes(KEY, b"the old object")
    upload_id = local_store.create_multipart(KEY)
    for number, data in enumerate(parts, 1):
        upload_part(local_store, KEY, upload_id, number, data)
    listed = local_store.list_parts(KEY, upload_id)

    real_copy = local_io.copy_fd
    copies = []

    def crash_on_second_part(in_fd: int, out_fd: int, count: int) -> None:
        copies.append(count)
        if len(copies) == 2:
            real_copy(in_fd, out_fd, count // 2)
            raise OSError(5, "Input/output error")
        real_copy(in_fd, out_fd, count)

    monkeypatch.setattr(local_io, "copy_fd", crash_on_second_part)
    with pytest.raises(StorageError, match="Input/output error"):
        local_store.complete_multipart(KEY, upload_id, listed)

    assert local_store.get_bytes(KEY) == b"the old object"  # never a half-written object
    assert files_under(local_store.objects_root) == [KEY]  # and no temp file left behind
    assert local_store.list_parts(KEY, upload_id) == listed  # the parts wait for a retry

    monkeypatch.undo()
    local_store.complete_multipart(KEY, upload_id, listed)
    assert local_store.get_bytes(KEY) == b"".join(parts)


def test_complete_refuses_parts_that_do_not_match(
    local_store: LocalStore, parts: list[bytes]
) -> None:
    upload_id = local_store.create_multipart(KEY)
    small = upload_part(local_store, KEY, upload_id, 1, b"too small to be a first part")
    last = upload_part(local_store, KEY, upload_id, 2, b"last")
    unknown = UploadedPart(number=3, size=1, etag="0" * 32)

    with pytest.raises(InvalidInput, match="at least one part"):
        local_store.complete_multipart(KEY, upload_id, [])
    with pytest.raises(InvalidInput, match="ascending"):
        local_store.complete_multipart(KEY, upload_id, [last, small])
    with pytest.raises(InvalidInput, match=f"at least {MIN_PART_SIZE} bytes"):
        local_store.complete_multipart(KEY, upload_id, [small, last])
    with pytest.raises(InvalidInput, match="was not received"):
        local_store.complete_multipart(KEY, upload_id, [unknown])
    with pytest.raises(InvalidInput, match="not one this store gave"):
        local_store.complete_multipart(KEY, upload_id, [UploadedPart(1, 1, "d41d8cd9")])
    assert local_store.head(KEY) is None


def test_complete_accepts_quoted_etags(local_store: LocalStore) -> None:
    upload_id = local_store.create_multipart(KEY)
    part = upload_part(local_store, KEY, upload_id, 1, b"only part")
    local_store.complete_multipart(KEY, upload_id, [UploadedPart(1, 0, f'"{part.etag}"')])
    assert local_store.get_bytes(KEY) == b"only part"


def test_abort_discards_the_parts_and_may_be_repeated(local_store: LocalStore) -> None:
    upload_id = local_store.create_multipart(KEY)
    upload_part(local_store, KEY, upload_id, 1, b"data")
    local_store.abort_multipart(KEY, upload_id)

    with pytest.raises(ObjectMissing, match="no multipart upload"):
        local_store.list_parts(KEY, upload_id)
    local_store.abort_multipart(KEY, upload_id)  # already gone: not an error
    assert list(local_store._staging.iterdir()) == []


def test_an_upload_belongs_to_its_key(local_store: LocalStore) -> None:
    upload_id = local_store.create_multipart(KEY)
    with pytest.raises(ObjectMissing, match="not an upload of"):
        local_store.list_parts("deposits/other", upload_id)
    with pytest.raises(ObjectMissing):
        upload_part(local_store, "deposits/other", upload_id, 1, b"x")
    with pytest.raises(ObjectMissing, match="not an upload id"):
        local_store.list_parts(KEY, "../../objects")


def test_a_short_part_body_is_refused_and_leaves_nothing(local_store: LocalStore) -> None:
    upload_id = local_store.create_multipart(KEY)
    with pytest.raises(BadRequest, match="ended after 5 of 10 bytes"):
        local_store.write_part(KEY, upload_id, 1, io.BytesIO(b"12345"), 10)
    assert local_store.list_parts(KEY, upload_id) == []
    assert files_under(local_store._staging / upload_id) == ["upload.json"]


class ReadOnlyBody:
    """A request body with read() only, like gunicorn's, that makes its bytes as it goes."""

    def __init__(self, size: int, chunk: int = 1024 * 1024) -> None:
        self.left, self.chunk, self.hash = size, chunk, hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = os.urandom(min(n, self.chunk, self.left))
        self.left -= len(data)
        self.hash.update(data)
        return data


def test_a_part_is_received_in_constant_memory(local_store: LocalStore) -> None:
    upload_id = local_store.create_multipart(KEY)
    size = 64 * 1024 * 1024
    body = ReadOnlyBody(size)
    tracemalloc.start()
    try:
        part = local_store.write_part(KEY, upload_id, 1, body, size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (part.number, part.size) == (1, size)
    staged = local_store._staging / upload_id / f"1.{part.etag}"
    assert hashlib.sha256(staged.read_bytes()).hexdigest() == body.hash.hexdigest()
    assert peak < 16 * 1024 * 1024


def test_a_short_read_only_body_is_refused(local_store: LocalStore) -> None:
    upload_id = local_store.create_multipart(KEY)
    with pytest.raises(BadRequest, match="ended after 1000 of 2000 bytes"):
        local_store.write_part(KEY, upload_id, 1, ReadOnlyBody(1000, chunk=300), 2000)
    assert local_store.list_parts(KEY, upload_id) == []


@pytest.mark.parametrize("number", [0, -1, 10_001, True])
def test_part_numbers_are_1_to_10000(local_store: LocalStore, number: int) -> None:
    upload_id = local_store.create_multipart(KEY)
    with pytest.raises(InvalidInput, match="part number"):
        local_store.presign_upload_part(KEY, upload_id, number, 60)


# -- signed URLs -------------------------------------------------------------------------------


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_presigned_urls_are_signed_tokens_under_store_v1(local_store: LocalStore, clock) -> None:
    upload_id = local_store.create_multipart(KEY)
    put = local_store.presign_upload_part(KEY, upload_id, 7, 600)
    get = local_store.presign_get(KEY, 60)

    assert put.method == "PUT" and get.method == "GET"
    assert put.url.startswith("http://broker.test/store/v1/")
    assert put.headers == {} and get.headers == {}
    assert put.expires_at.timestamp() == int(clock.now) + 600

    grant = local_store.verify_url(token_of(put.url), OP_PUT_PART)
    assert (grant.key, grant.upload_id, grant.part_number) == (KEY, upload_id, 7)
    assert local_store.verify_url(token_of(get.url), OP_GET).key == KEY


def test_a_tampered_token_is_refused(local_store: LocalStore) -> None:
    token = token_of(local_store.presign_get(KEY, 60).url)
    for i in (0, len(token) // 2, len(token) - 2):
        flipped = "A" if token[i] != "A" else "B"
        tampered = token[:i] + flipped + token[i + 1 :]
        with pytest.raises(Forbidden, match="signature does not match|malformed|truncated"):
            local_store.verify_url(tampered, OP_GET)
    for garbage in ("", "not/a-token", "%2e%2e", "A" * 3000, token[:10]):
        with pytest.raises(Forbidden):
            local_store.verify_url(garbage, OP_GET)


def test_a_token_signed_with_another_secret_is_refused(
    local_store: LocalStore, tmp_path: Path, clock
) -> None:
    other = LocalStore(tmp_path / "o", tmp_path / "s", "http://x", b"k" * 32, clock=clock)
    token = token_of(other.presign_get(KEY, 60).url)
    with pytest.raises(Forbidden, match="signature does not match"):
        local_store.verify_url(token, OP_GET)


def test_an_expired_token_is_refused(local_store: LocalStore, clock) -> None:
    token = token_of(local_store.presign_get(KEY, 60).url)
    clock.advance(59)
    local_store.verify_url(token, OP_GET)
    clock.advance(1)
    with pytest.raises(Forbidden, match="expired"):
        local_store.verify_url(token, OP_GET)


def test_a_download_token_cannot_upload(local_store: LocalStore) -> None:
    token = token_of(local_store.presign_get(KEY, 60).url)
    with pytest.raises(Forbidden, match="allows GET, not PUT"):
        local_store.verify_url(token, OP_PUT_PART)


@pytest.mark.parametrize("expires_in", [0, -5, 604_801])
def test_url_lifetimes_are_1_s_to_7_days(local_store: LocalStore, expires_in: int) -> None:
    with pytest.raises(InvalidInput, match="lifetime"):
        local_store.presign_get(KEY, expires_in)


def test_a_short_url_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        LocalStore(tmp_path / "o", tmp_path / "s", "http://x", b"short")


# -- open_store --------------------------------------------------------------------------------

SECRET = b"s" * 32


def test_open_store_defaults_to_a_local_store_in_the_data_dir(tmp_path: Path) -> None:
    store = open_store(
        "", data_dir=tmp_path, url_base="http://b", url_secret=SECRET, s3_endpoint_url=None
    )
    assert isinstance(store, LocalStore)
    assert store.objects_root == (tmp_path / "objects").resolve()
    assert (tmp_path / "staging").is_dir()


def test_open_store_takes_a_file_url(tmp_path: Path) -> None:
    root = tmp_path / "elsewhere" / "objects"
    store = open_store(
        f"file://{root}",
        data_dir=tmp_path / "data",
        url_base="http://b",
        url_secret=SECRET,
        s3_endpoint_url=None,
    )
    assert isinstance(store, LocalStore) and store.objects_root == root.resolve()


def test_open_store_refuses_a_root_that_holds_the_key_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="contains the key directory"):
        open_store(
            f"file://{tmp_path}",
            data_dir=tmp_path,
            url_base="http://b",
            url_secret=SECRET,
            s3_endpoint_url=None,
        )


@pytest.mark.parametrize(
    "url", ["file://relative/path", "ftp://host/x", "s3://", "s3://bucket/p?region=x", "gs://b"]
)
def test_open_store_refuses_urls_it_cannot_serve(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(
            url, data_dir=tmp_path, url_base="http://b", url_secret=SECRET, s3_endpoint_url=None
        )


def test_open_store_opens_s3_with_bucket_and_prefix(tmp_path: Path) -> None:
    from broker.adapters.objectstore.s3 import S3Store

    store = open_store(
        "s3://weights/escrow/prod",
        data_dir=tmp_path,
        url_base="http://b",
        url_secret=SECRET,
        s3_endpoint_url="http://127.0.0.1:9",
    )
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == ("weights", "escrow/prod/")


@pytest.mark.parametrize("planned", [True, False])
def test_an_upload_aborted_while_a_part_arrives_answers_object_missing(
    local_store: LocalStore, planned: bool
) -> None:
    """Not a 503 "No such file or directory": the client must learn the upload is gone."""
    size = MIN_PART_SIZE
    upload = local_store.create_multipart("k", [size] if planned else None)

    class AbortingBody(io.BytesIO):
        def readinto(self, buffer):
            local_store.abort_multipart("k", upload)
            return super().readinto(buffer)

    with pytest.raises(ObjectMissing) as ended:
        local_store.write_part("k", upload, 1, AbortingBody(b"x" * size), size)
    assert "ended while receiving part 1" in ended.value.message
