"""A Flask app for tests/api/test_socket_body.py, served by a real gunicorn sync worker:
`PUT /sum?read=N` reads N bytes (all by default) of its body through `sized_body` and answers
what read them and the SHA-256 of what it read."""

from __future__ import annotations

import hashlib

from flask import Flask, request

from broker.http.socket_body import sized_body

app = Flask(__name__)


@app.get("/healthz")
def healthz() -> str:
    return "ok"


@app.put("/sum")
def checksum() -> dict[str, object]:
    body = sized_body(request)
    wanted = int(request.args.get("read", request.content_length or 0))
    digest, buffer, read = hashlib.sha256(), bytearray(1 << 20), 0
    while read < wanted:
        n = body.readinto(memoryview(buffer)[: min(len(buffer), wanted - read)])  # type: ignore[attr-defined]
        if not n:
            break
        digest.update(memoryview(buffer)[:n])
        read += n
    return {"reader": type(body).__name__, "read": read, "sha256": digest.hexdigest()}
