"""The local object store's signed URLs, served by the broker (S3 serves its own).

    PUT /store/v1/<token>   upload one multipart part (sized body); answers its ETag
    GET /store/v1/<token>   download an object, with Range requests to resume

A token is signed and expiring (see `LocalStore.verify_url`); errors are problem+json through
the app's error handlers (`broker.api.common.register_error_handlers`).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request, send_file
from werkzeug.exceptions import LengthRequired

from broker.adapters.objectstore.local import OP_GET, OP_PUT_PART, LocalStore
from broker.api.openapi import operation, path_params
from broker.errors import NotFound

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
    part = store.write_part(
        grant.key, grant.upload_id, grant.part_number, request.stream, request.content_length
    )
    response = Response(status=200)
    response.set_etag(part.etag)
    return response


@bp.get("/<token>")
def get_object(token: str) -> Response:
    store = _local_store()
    grant = store.verify_url(token, OP_GET)
    response = send_file(
        store.object_file(grant.key), mimetype="application/octet-stream", conditional=True
    )
    # The URL is a bearer credential: nobody between the client and us should keep a copy.
    response.cache_control.private = True
    response.cache_control.no_store = True
    return response
