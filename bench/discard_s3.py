"""A discard-only S3 endpoint for bench/deposit.py: what the broker and boto3 call, no storage.

moto spends ~20 CPU-s per GiB uploaded (and ~15 s assembling a 1 GiB multipart object), so on
a 2-core box a client's own CPU use decides how much is left for moto; a ratio against boto3 on
moto then says little about whether encryption hides behind the upload. This server reads part
bodies into a reused buffer and throws them away (remembering sizes only), so the client's cost
is what is measured. Small objects (headers, manifests, wrapped identities) are kept in memory.
Signatures are not checked. Not a test double for anything but throughput.

    python bench/discard_s3.py            # prints "listening on http://127.0.0.1:PORT"
"""

from __future__ import annotations

import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

SMALL = 16 * 1024 * 1024  # objects kept in memory at most this big


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: set[str] = set()
        self.objects: dict[tuple[str, str], bytes | int] = {}  # bytes, or the size if discarded
        self.uploads: dict[str, dict[int, int]] = {}  # upload id -> part number -> size


STATE = State()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        bucket, _, key = parts.path.lstrip("/").partition("/")
        return bucket, key, parse_qs(parts.query, keep_blank_values=True)

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
               ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if body:
            self.send_header("Content-Type", "application/xml")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _body(self, keep: bool) -> tuple[bytes, int]:
        length = int(self.headers.get("Content-Length") or 0)
        if keep and length <= SMALL:
            return self.rfile.read(length), length
        buffer = memoryview(bytearray(1 << 20))
        left = length
        while left:
            n = self.rfile.readinto(buffer[: min(left, len(buffer))])
            if not n:
                break
            left -= n
        return b"", length

    def do_PUT(self) -> None:
        bucket, key, query = self._target()
        if not key:
            STATE.buckets.add(bucket)
            return self._reply(200)
        if "uploadId" in query:
            data, size = self._body(keep=False)
            with STATE.lock:
                STATE.uploads[query["uploadId"][0]][int(query["partNumber"][0])] = size
            return self._reply(200, headers={"ETag": f'"{size:032x}"'})
        data, size = self._body(keep=True)
        with STATE.lock:
            STATE.objects[(bucket, key)] = data if size <= SMALL else size
        return self._reply(200, headers={"ETag": '"0"'})

    def do_POST(self) -> None:
        bucket, key, query = self._target()
        self._body(keep=True)
        if "uploads" in query:
            upload = uuid.uuid4().hex
            with STATE.lock:
                STATE.uploads[upload] = {}
            return self._reply(200, (
                f"<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                f"<UploadId>{upload}</UploadId></InitiateMultipartUploadResult>"
            ).encode())
        upload = query["uploadId"][0]
        with STATE.lock:
            parts = STATE.uploads.pop(upload, {})
            STATE.objects[(bucket, key)] = sum(parts.values())
        return self._reply(200, (
            f"<CompleteMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key>"
            f'<ETag>"0-{len(parts)}"</ETag></CompleteMultipartUploadResult>'
        ).encode())

    def do_GET(self) -> None:
        bucket, key, query = self._target()
        if not key:  # ListObjectsV2 (`escrow init` lists the signing keys), in one page
            return self._list(bucket, query.get("prefix", [""])[0])
        if "uploadId" in query:
            with STATE.lock:
                parts = sorted(STATE.uploads.get(query["uploadId"][0], {}).items())
            items = "".join(
                f'<Part><PartNumber>{n}</PartNumber><ETag>"{size:032x}"</ETag>'
                f"<Size>{size}</Size></Part>" for n, size in parts
            )
            return self._reply(200, (
                f"<ListPartsResult><Bucket>{bucket}</Bucket><IsTruncated>false</IsTruncated>"
                f"{items}</ListPartsResult>"
            ).encode())
        with STATE.lock:
            data = STATE.objects.get((bucket, key))
        if data is None:
            return self._reply(404, b"<Error><Code>NoSuchKey</Code></Error>")
        if isinstance(data, int):
            return self._reply(501, b"<Error><Code>Discarded</Code></Error>")
        return self._reply(200, data, {"ETag": '"0"'})

    def _list(self, bucket: str, prefix: str) -> None:
        with STATE.lock:
            found = sorted(
                (key, data if isinstance(data, int) else len(data))
                for (owner, key), data in STATE.objects.items()
                if owner == bucket and key.startswith(prefix)
            )
        items = "".join(
            f'<Contents><Key>{escape(key)}</Key><Size>{size}</Size><ETag>"0"</ETag></Contents>'
            for key, size in found
        )
        self._reply(200, (
            f"<ListBucketResult><Name>{bucket}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(found)}</KeyCount><IsTruncated>false</IsTruncated>{items}"
            "</ListBucketResult>"
        ).encode())

    def do_HEAD(self) -> None:
        bucket, key, _ = self._target()
        if not key:
            return self._reply(200 if bucket in STATE.buckets else 404)
        with STATE.lock:
            data = STATE.objects.get((bucket, key))
        if data is None:
            return self._reply(404)
        size = data if isinstance(data, int) else len(data)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("ETag", '"0"')
        self.end_headers()

    def do_DELETE(self) -> None:
        bucket, key, query = self._target()
        with STATE.lock:
            if "uploadId" in query:
                STATE.uploads.pop(query["uploadId"][0], None)
            else:
                STATE.objects.pop((bucket, key), None)
        self._reply(204)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
