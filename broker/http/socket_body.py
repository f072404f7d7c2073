"""A sized request body read from gunicorn's socket into the caller's buffer.

A part uploaded to the local store is gigabytes through `PUT /store/v1/<token>`. Through the
WSGI stream each 4 MiB read is a new `bytes` from gunicorn's reader, copied through two
`BytesIO` buffers and then into the caller's buffer by werkzeug: ~1.0–1.4 CPU-s per GiB on the
development box, against ~0.6 for `recv_into` the caller's buffer (measured with one gunicorn
sync worker writing 1 GiB to /dev/shm; most of the rest is the kernel's). On 2 cores that CPU is
taken from the depositing client.

Only a gunicorn worker that reads the socket itself (sync, as `escrow serve` runs, or gthread)
with a `Content-Length` body qualifies, and only before anything read the body; anything else
(another server, Flask's test client, a chunked body) gets the plain WSGI stream. gunicorn's own
count of what is left of the body is kept in step, so after the answer it drains exactly what
the client still sends, as it does when the application reads less.
"""

from __future__ import annotations

import io
from typing import IO, Any, cast

from flask import Request
from werkzeug.exceptions import ClientDisconnected

__all__ = ["SocketBody", "sized_body"]


def sized_body(request: Request) -> IO[bytes]:
    """The body of `request` (with a Content-Length): straight from the socket under
    gunicorn, else the WSGI stream. Its readers call `readinto` only (`local_io.receive`)."""
    direct = SocketBody.take(request.environ)
    return cast(IO[bytes], direct) if direct is not None else request.stream


class SocketBody:
    """`readinto` of what is left of a gunicorn request body of known length."""

    def __init__(self, reader: Any, unreader: Any) -> None:
        self._reader = reader  # gunicorn.http.body.LengthReader: `.length` is what is left
        self._sock = unreader.sock
        held = unreader.buf.getvalue()  # what gunicorn read past the headers
        unreader.buf = io.BytesIO()
        mine = held[: reader.length]
        if len(held) > len(mine):
            unreader.unread(held[len(mine):])  # a pipelined request's first bytes: not ours
        self._held = memoryview(mine)

    @classmethod
    def take(cls, environ: dict[str, Any]) -> SocketBody | None:
        try:
            from gunicorn.http.body import Body, LengthReader
            from gunicorn.http.unreader import SocketUnreader
        except ImportError:  # not served by gunicorn
            return None
        body = environ.get("wsgi.input")
        if not isinstance(body, Body) or not isinstance(body.reader, LengthReader):
            return None
        unreader = body.reader.unreader
        if body.buf.tell() or not isinstance(unreader, SocketUnreader):
            return None  # something read from the body already; its bytes are gunicorn's
        return cls(body.reader, unreader)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._reader.length)
        if want <= 0:
            return 0
        if self._held:
            n = min(want, len(self._held))
            view[:n] = self._held[:n]
            self._held = self._held[n:]
        else:
            try:
                n = self._sock.recv_into(view[:want])
            except OSError as e:  # as werkzeug's stream answers a client gone mid-body
                raise ClientDisconnected(f"the client went away mid-body: {e}") from None
        self._reader.length -= n
        return n
