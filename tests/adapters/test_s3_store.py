"""The S3 store against real S3 servers over HTTP: moto (S3 semantics) and s3rver (signatures,
presigned-URL expiry). Parts go up with plain urllib3 PUTs to presigned URLs, as a client's."""

from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest
import urllib3

from broker.adapters.objectstore.base import UploadedPart
from broker.adapters.objectstore.rules import MIN_PART_SIZE
from broker.adapters.objectstore.s3 import S3Store
from broker.errors import InvalidInput, ObjectMissing, StorageError

pytestmark = pytest.mark.s3

KEY = "deposits/d1/files/0.payload"


@pytest.fixture
def http() -> urllib3.PoolManager:
    return urllib3.PoolManager(retries=False, timeout=30)


def make_store(endpoint, bucket: str, **kwargs) -> S3Store:
    endpoint.client("s3").create_bucket(Bucket=bucket)
    return S3Store(
        bucket, "escrow/", endpoint_url=endpoint.url, session=endpoint.session(), **kwargs
    )


@pytest.fixture
def moto_store(moto_endpoint, bucket_name: str) -> S3Store:
    return make_store(moto_endpoint, bucket_name)


@pytest.fixture
def s3rver_store(s3rver_endpoint, bucket_name: str) -> S3Store:
    return make_store(s3rver_endpoint, bucket_name)


@pytest.fixture(scope="module")
def parts() -> list[bytes]:
    return [os.urandom(MIN_PART_SIZE), b"the last part may be small"]


def put_parts(
    store: S3Store, http: urllib3.PoolManager, upload_id: str, parts: list[bytes]
) -> list[UploadedPart]:
    """Upload each part as a client does: a plain PUT to its presigned URL, no extra headers."""
    uploaded = []
    for number, data in enumerate(parts, 1):
        signed = store.presign_upload_part(KEY, upload_id, number, 600)
        assert signed.headers == {}
        response = http.request(signed.method, signed.url, body=data)
        assert response.status == 200, response.data
        uploaded.append(UploadedPart(number, len(data), response.headers["ETag"].strip('"')))
    return uploaded


# -- moto --------------------------------------------------------------------------------------


def test_put_get_head_delete_round_trip(moto_store: S3Store, moto_endpoint) -> None:
    moto_store.put_bytes("deposits/d1/manifest.json", b"{}")

    assert moto_store.get_bytes("deposits/d1/manifest.json") == b"{}"
    info = moto_store.head("deposits/d1/manifest.json")
    assert info is not None and info.size == 2
    assert info.etag == hashlib.md5(b"{}").hexdigest()
    raw = moto_endpoint.client("s3").get_object(
        Bucket=moto_store.bucket, Key="escrow/deposits/d1/manifest.json"
    )
    assert raw["Body"].read() == b"{}"  # the bucket key is prefix + key

    moto_store.delete("deposits/d1/manifest.json")
    assert moto_store.head("deposits/d1/manifest.json") is None


def test_a_missing_object_raises_object_missing(moto_store: S3Store) -> None:
    with pytest.raises(ObjectMissing, match="no such object"):
        moto_store.get_bytes("nothing/here")
    with pytest.raises(ObjectMissing):
        moto_store.open_read("nothing/here")
    assert moto_store.head("nothing/here") is None
    moto_store.delete("nothing/here")  # not an error


def test_open_read_streams_the_object(moto_store: S3Store) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    moto_store.put_bytes(KEY, data)
    chunks = []
    with moto_store.open_read(KEY) as stream:
        while chunk := stream.read(1024 * 1024):
            assert len(chunk) <= 1024 * 1024
            chunks.append(chunk)
    assert b"".join(chunks) == data


def test_multipart_with_presigned_part_urls(
    moto_store: S3Store, http: urllib3.PoolManager, parts: list[bytes]
) -> None:
    upload_id = moto_store.create_multipart(KEY)
    uploaded = put_parts(moto_store, http, upload_id, parts)

    listed = moto_store.list_parts(KEY, upload_id)
    assert [(p.number, p.size, p.etag) for p in listed] == [
        (p.number, p.size, p.etag) for p in uploaded
    ]
    moto_store.complete_multipart(KEY, upload_id, listed)

    assert moto_store.get_bytes(KEY) == b"".join(parts)
    with pytest.raises(ObjectMissing, match="no such multipart upload"):
        moto_store.list_parts(KEY, upload_id)


def test_presigned_urls_carry_no_checksum_parameters(moto_store: S3Store) -> None:
    upload_id = moto_store.create_multipart(KEY)
    for signed in (
        moto_store.presign_upload_part(KEY, upload_id, 1, 600),
        moto_store.presign_get(KEY, 600),
    ):
        assert "checksum" not in signed.url.lower()
        assert f"/{moto_store.bucket}/escrow/" in signed.url  # path-style on a custom endpoint


def test_a_presigned_get_downloads_whole_or_by_range(
    moto_store: S3Store, http: urllib3.PoolManager
) -> None:
    data = os.urandom(100_000)
    moto_store.put_bytes(KEY, data)
    signed = moto_store.presign_get(KEY, 60)

    whole = http.request(signed.method, signed.url)
    assert whole.status == 200 and whole.data == data
    tail = http.request("GET", signed.url, headers={"Range": "bytes=40000-"})
    assert tail.status == 206 and tail.data == data[40000:]


def test_abort_discards_the_upload_and_may_be_repeated(
    moto_store: S3Store, http: urllib3.PoolManager, parts: list[bytes]
) -> None:
    upload_id = moto_store.create_multipart(KEY)
    put_parts(moto_store, http, upload_id, parts[:1])
    moto_store.abort_multipart(KEY, upload_id)

    with pytest.raises(ObjectMissing, match="no such multipart upload"):
        moto_store.list_parts(KEY, upload_id)
    moto_store.abort_multipart(KEY, upload_id)  # not an error
    assert moto_store.head(KEY) is None


def test_complete_refuses_parts_that_were_not_uploaded(
    moto_store: S3Store, http: urllib3.PoolManager, parts: list[bytes]
) -> None:
    upload_id = moto_store.create_multipart(KEY)
    [part] = put_parts(moto_store, http, upload_id, parts[:1])
    wrong = UploadedPart(part.number, part.size, "0" * 32)

    with pytest.raises(InvalidInput, match="do not match"):
        moto_store.complete_multipart(KEY, upload_id, [wrong])
    with pytest.raises(InvalidInput, match="ascending"):
        moto_store.complete_multipart(KEY, upload_id, [part, part])
    assert moto_store.head(KEY) is None


def test_refuses_keys_that_leave_its_prefix(moto_store: S3Store) -> None:
    for key in ("../other-tenant/x", "/abs", "a//b", ""):
        with pytest.raises(InvalidInput):
            moto_store.put_bytes(key, b"x")


def test_check_describes_the_bucket(moto_store: S3Store) -> None:
    assert moto_store.check().startswith(f"s3 bucket {moto_store.bucket!r}")


def test_a_missing_bucket_is_a_storage_error_with_a_hint(moto_endpoint) -> None:
    store = S3Store(
        "no-such-bucket-here", endpoint_url=moto_endpoint.url, session=moto_endpoint.session()
    )
    with pytest.raises(StorageError, match="NoSuchBucket") as raised:
        store.put_bytes("k", b"x")
    assert "create the bucket" in raised.value.hint
    assert moto_endpoint.secret_access_key not in raised.value.diagnostics()


def test_an_unreachable_endpoint_is_a_storage_error(moto_endpoint) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        store = S3Store(
            "b",
            endpoint_url=f"http://127.0.0.1:{port}",
            session=moto_endpoint.session(),
            max_attempts=1,
        )
        with pytest.raises(StorageError, match="s3 get 'k' in bucket 'b' failed") as raised:
            store.get_bytes("k")
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


# -- s3rver: real signature checks and presigned-URL expiry -------------------------------------


def test_presigned_part_urls_pass_real_signature_checks(
    s3rver_store: S3Store, http: urllib3.PoolManager, parts: list[bytes]
) -> None:
    upload_id = s3rver_store.create_multipart(KEY)
    uploaded = put_parts(s3rver_store, http, upload_id, parts)
    s3rver_store.complete_multipart(KEY, upload_id, uploaded)

    signed = s3rver_store.presign_get(KEY, 60)
    assert http.request(signed.method, signed.url).data == b"".join(parts)


def test_a_presigned_url_is_refused_after_it_expires(
    s3rver_store: S3Store, http: urllib3.PoolManager
) -> None:
    s3rver_store.put_bytes(KEY, b"data")
    short = s3rver_store.presign_get(KEY, 1)
    upload_id = s3rver_store.create_multipart(KEY)
    short_put = s3rver_store.presign_upload_part(KEY, upload_id, 1, 1)
    assert http.request("GET", s3rver_store.presign_get(KEY, 600).url).status == 200

    # expires_at is X-Amz-Date (whole seconds) + 1 s, the instant s3rver starts refusing.
    # The two URLs may be signed in different seconds: wait for the later one.
    last_expiry = max(short.expires_at, short_put.expires_at).timestamp()
    time.sleep(max(0.0, last_expiry + 0.2 - time.time()))

    expired = http.request("GET", short.url)
    assert expired.status == 403 and b"Request has expired" in expired.data
    assert http.request("PUT", short_put.url, body=b"late").status == 403
