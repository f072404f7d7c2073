"""The local object store's signed URLs, served by the broker (S3 serves its own).

    PUT /store/v1/<token>   upload one multipart part (sized body); answers its ETag
    GET /store/v1/<token>   download an object, with Range requests to resume

A token is signed and expiring (see `LocalStore.verify_url`); errors are problem+json through
the app's error handlers (`broker.http.common.register_error_handlers`).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, request
from werkzeug.datastructures import ContentRange
from werkzeug.exceptions import LengthRequired, RequestedRangeNotSatisfiable
from werkzeug.wsgi import FileWrapper

from broker.adapters.objectstore.local import BLOCK_SIZE, OP_GET, OP_PUT_PART, LocalStore
from broker.errors import NotFound, PayloadTooLarge
from broker.http.openapi import operation, path_params
from broker.http.socket_body import sized_body

bp = Blueprint("store_urls", __name__, url_prefix="/store/v1")

OPENAPI = {
    "/store/v1/{token}": {
        "parameters": path_params("token"),
        "put": operation("local store: upload one part with a signed URL", auth=False),
        "get": operation("local store: download an object with a signed URL (Range allowed)",
                         auth=False, content_type="application/octet-stream"),
    }
}


def _local_store() -> LocalStore:
    store = current_app.extensions["escrow"].store
    if not isinstance(store, LocalStore):
        raise NotFound(
            "this broker's object store serves its own URLs",
            hint="use the URL the broker gave for this transfer",
        )
    return store


@bp.put("/<token>")
def put_part(token: str) -> Response:
    store = _local_store()
    grant = store.verify_url(token, OP_PUT_PART)
    if request.content_length is None:
        raise LengthRequired("send the part with a Content-Length header (not chunked)")
    # This URL's part and no more: a longer body is refused (413) before a byte is read.
    request.max_content_length = grant.max_size
    if request.content_length > grant.max_size:
        raise PayloadTooLarge(
            f"part {grant.part_number} is {grant.max_size} bytes at most; this body is "
            f"{request.content_length}, and was not read",
            hint="send the part's own bytes (…/upload answers the part size); a client that "
            "cuts parts otherwise is out of date",
        )
    part = store.write_part(
        grant.key, grant.upload_id, grant.part_number, sized_body(request), request.content_length
    )
    response = Response(status=200)
    response.set_etag(part.etag)
    return response


@bp.get("/<token>")
def get_object(token: str) -> Response:
    store = _local_store()
    grant = store.verify_url(token, OP_GET)
    path = store.object_file(grant.key)
    size = path.stat().st_size
    byte_range = request.range.range_for_length(size) if request.range else None
    if request.range and byte_range is None:
        raise RequestedRangeNotSatisfiable(length=size)
    start, end = byte_range or (0, size)
    window = _Window(path, start, end - start)
    # wsgi.file_wrapper lets gunicorn send the bytes with sendfile() from the window's offset,
    # for ranges too; werkzeug's own range responses copy through Python 8 KiB at a time.
    body = request.environ.get("wsgi.file_wrapper", FileWrapper)(window, BLOCK_SIZE)
    response = Response(body, status=206 if byte_range else 200,
                        mimetype="application/octet-stream", direct_passthrough=True)
    response.content_length = end - start
    response.accept_ranges = "bytes"
    if byte_range:
        response.content_range = ContentRange("bytes", start, end, size)
    # The URL is a bearer credential: nobody between the client and us should keep a copy.
    response.cache_control.private = True
    response.cache_control.no_store = True
    return response


class _Window:
    """`length` bytes of a file from `start`: read() stops there (for servers that iterate),
    fileno() is positioned at `start` (for servers that sendfile() Content-Length bytes)."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        self._handle = open(path, "rb")  # noqa: SIM115 - closed by the WSGI server (close())
        self._handle.seek(start)
        self._left = length

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._handle.read(size)
        self._left -= len(data)
        return data

    def fileno(self) -> int:
        return self._handle.fileno()

    def close(self) -> None:
        self._handle.close()
