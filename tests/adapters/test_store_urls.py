"""The broker serves the local store's signed URLs: part uploads and resumable downloads."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
import urllib3
from flask.testing import FlaskClient

from broker.adapters.objectstore.local import LocalStore
from broker.adapters.objectstore.rules import MIN_PART_SIZE

from .support import Clock, make_store_app

KEY = "deposits/d1/files/0.payload"


def path_of(url: str) -> str:
    return urlsplit(url).path


def assert_problem(response, status: int, detail: str) -> None:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert set(body) >= {"type", "title", "status", "detail"}
    assert body["status"] == status
    assert detail in body["detail"]


# -- through the Flask test client -------------------------------------------------------------


def test_a_part_put_to_its_url_is_received_and_answers_its_etag(
    store_client: FlaskClient, local_store: LocalStore
) -> None:
    upload_id = local_store.create_multipart(KEY)
    url = local_store.presign_upload_part(KEY, upload_id, 1, 600).url

    response = store_client.put(path_of(url), data=b"part one")

    assert response.status_code == 200
    etag = response.headers["ETag"].strip('"')
    [part] = local_store.list_parts(KEY, upload_id)
    assert (part.number, part.size, part.etag) == (1, 8, etag)


def test_a_re_sent_part_replaces_the_old_one(
    store_client: FlaskClient, local_store: LocalStore
) -> None:
    upload_id = local_store.create_multipart(KEY)
    url = path_of(local_store.presign_upload_part(KEY, upload_id, 1, 600).url)
    store_client.put(url, data=b"first")
    store_client.put(url, data=b"second")

    [part] = local_store.list_parts(KEY, upload_id)
    local_store.complete_multipart(KEY, upload_id, [part])
    assert local_store.get_bytes(KEY) == b"second"


def test_an_object_is_downloaded_whole_or_by_range(
    store_client: FlaskClient, local_store: LocalStore
) -> None:
    data = os.urandom(100_000)
    local_store.put_bytes(KEY, data)
    url = path_of(local_store.presign_get(KEY, 60).url)

    whole = store_client.get(url)
    assert whole.status_code == 200 and whole.data == data
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert "no-store" in whole.headers["Cache-Control"]

    tail = store_client.get(url, headers={"Range": "bytes=40000-"})
    assert tail.status_code == 206
    assert tail.headers["Content-Range"] == f"bytes 40000-99999/{len(data)}"
    assert tail.data == data[40000:]

    head = store_client.head(url)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))


def test_a_tampered_url_is_refused_with_a_problem(
    store_client: FlaskClient, local_store: LocalStore
) -> None:
    local_store.put_bytes(KEY, b"data")
    url = path_of(local_store.presign_get(KEY, 60).url)
    tampered = url[:-5] + ("A" if url[-5] != "A" else "B") + url[-4:]

    assert_problem(store_client.get(tampered), 403, "signature does not match")


def test_an_expired_url_is_refused_with_a_problem(
    store_client: FlaskClient, local_store: LocalStore, clock: Clock
) -> None:
    local_store.put_bytes(KEY, b"data")
    get_url = path_of(local_store.presign_get(KEY, 60).url)
    upload_id = local_store.create_multipart(KEY)
    put_url = path_of(local_store.presign_upload_part(KEY, upload_id, 1, 60).url)
    clock.advance(61)

    assert_problem(store_client.get(get_url), 403, "expired")
    assert_problem(store_client.put(put_url, data=b"late"), 403, "expired")
    assert local_store.list_parts(KEY, upload_id) == []


def test_a_download_url_cannot_upload(store_client: FlaskClient, local_store: LocalStore) -> None:
    url = path_of(local_store.presign_get(KEY, 60).url)
    assert_problem(store_client.put(url, data=b"x"), 403, "allows GET, not PUT")


def test_a_missing_object_is_a_404_problem(
    store_client: FlaskClient, local_store: LocalStore
) -> None:
    url = path_of(local_store.presign_get(KEY, 60).url)
    assert_problem(store_client.get(url), 404, "does not exist")


def test_a_part_of_an_aborted_upload_is_a_404_problem(
    store_client: FlaskClient, local_store: LocalStore
) -> None:
    upload_id = local_store.create_multipart(KEY)
    url = path_of(local_store.presign_upload_part(KEY, upload_id, 1, 60).url)
    local_store.abort_multipart(KEY, upload_id)
    assert_problem(store_client.put(url, data=b"x"), 404, "no multipart upload")


def test_an_s3_backed_broker_serves_no_store_urls(local_store: LocalStore) -> None:
    client = make_store_app(object()).test_client()
    url = path_of(local_store.presign_get(KEY, 60).url)
    assert_problem(client.get(url), 404, "serves its own URLs")


# -- through a real HTTP server, with urllib3 --------------------------------------------------


@pytest.fixture
def http() -> urllib3.PoolManager:
    return urllib3.PoolManager(retries=False, timeout=30)


def test_multipart_upload_and_resumed_download_over_http(
    live_store: LocalStore, http: urllib3.PoolManager
) -> None:
    parts = [os.urandom(MIN_PART_SIZE), os.urandom(1234)]
    upload_id = live_store.create_multipart(KEY)
    etags = []
    for number, data in enumerate(parts, 1):
        signed = live_store.presign_upload_part(KEY, upload_id, number, 600)
        response = http.request(signed.method, signed.url, body=data, headers=signed.headers)
        assert response.status == 200, response.data
        etags.append(response.headers["ETag"].strip('"'))

    listed = live_store.list_parts(KEY, upload_id)
    assert [p.etag for p in listed] == etags
    live_store.complete_multipart(KEY, upload_id, listed)

    url = live_store.presign_get(KEY, 60).url
    whole = b"".join(parts)
    first = http.request("GET", url, headers={"Range": "bytes=0-999999"})
    assert first.status == 206 and first.data == whole[:1_000_000]
    rest = http.request("GET", url, headers={"Range": f"bytes={len(first.data)}-"})
    assert rest.status == 206
    assert first.data + rest.data == whole


def test_a_chunked_upload_without_length_is_refused_over_http(
    live_store: LocalStore, http: urllib3.PoolManager
) -> None:
    upload_id = live_store.create_multipart(KEY)
    url = live_store.presign_upload_part(KEY, upload_id, 1, 600).url

    response = http.request("PUT", url, body=iter([b"a", b"b"]), chunked=True)

    assert response.status == 411
    assert response.headers["Content-Type"] == "application/problem+json"
    assert "Content-Length" in response.json()["detail"]
    assert live_store.list_parts(KEY, upload_id) == []


def test_an_expired_url_is_refused_over_http(
    live_store: LocalStore, http: urllib3.PoolManager, clock: Clock
) -> None:
    live_store.put_bytes(KEY, b"data")
    url = live_store.presign_get(KEY, 5).url
    assert http.request("GET", url).data == b"data"
    clock.advance(5)
    response = http.request("GET", url)
    assert response.status == 403
    assert response.json()["title"] == "forbidden"
    assert "expired" in response.json()["detail"]
