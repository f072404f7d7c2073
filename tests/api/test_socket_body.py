"""A part's body read from gunicorn's socket into the store's buffer (`broker/http/socket_body`),
against real gunicorn workers: the bytes are exact wherever gunicorn's own read-ahead ends
(the sync worker the broker runs); with a worker that keeps connections open (gthread), a
pipelined request behind a body is kept for its turn, and a body the application leaves half
read is drained, so the connection's next request is answered."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from live import free_port

from broker.cli.serving import stop_group, wait_until_serving

HERE = Path(__file__).resolve().parent


def serve(tmp_path_factory, *worker: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    log = tmp_path_factory.mktemp("socket-body") / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "1", *worker, "-b", f"127.0.0.1:{port}",
             "--chdir", str(HERE), "socket_body_app:app"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        assert wait_until_serving(f"http://127.0.0.1:{port}", process), log.read_text()
        yield "127.0.0.1", port
    finally:
        stop_group(process)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """The broker's kind of worker: sync, one request per connection."""
    yield from serve(tmp_path_factory, "-k", "sync")


@pytest.fixture(scope="module")
def keep_alive(tmp_path_factory) -> Iterator[tuple[str, int]]:
    yield from serve(tmp_path_factory, "-k", "gthread", "--threads", "2")


def put(path: str, body: bytes) -> bytes:
    """One PUT, head and body in a single send (so gunicorn reads body bytes with the head)."""
    return (f"PUT {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


def answers(sock: socket.socket, count: int) -> list[dict]:
    """Read `count` HTTP answers (JSON bodies with Content-Length) from a keep-alive socket."""
    data, found = b"", []
    while len(found) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode()
            length = int(next(line.split(":", 1)[1] for line in head.split("\r\n")
                              if line.lower().startswith("content-length:")))
            if len(data) >= head_end + 4 + length:
                assert head.startswith("HTTP/1.1 200"), head
                found.append(json.loads(data[head_end + 4 : head_end + 4 + length]))
                data = data[head_end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(found)} of {count} answers"
        data += chunk
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_body_is_read_from_the_socket_exactly(server) -> None:
    body = os.urandom(9 * 1024 * 1024 + 12345)
    with socket.create_connection(server, timeout=30) as sock:
        sock.sendall(put("/sum", body))
        (answer,) = answers(sock, 1)
    assert answer == {"reader": "SocketBody", "read": len(body), "sha256": sha256(body)}


def test_a_pipelined_request_behind_a_short_body_is_answered_in_turn(keep_alive) -> None:
    # Both requests fit in gunicorn's first read: the second one's head is read ahead with
    # the first body and must go back to gunicorn, not into the first body.
    first, second = os.urandom(1000), os.urandom(3000)
    with socket.create_connection(keep_alive, timeout=30) as sock:
        sock.sendall(put("/sum", first) + put("/sum", second))
        got = answers(sock, 2)
    assert [(a["read"], a["sha256"]) for a in got] == [
        (len(first), sha256(first)), (len(second), sha256(second))]
    assert {a["reader"] for a in got} == {"SocketBody"}


def test_a_half_read_body_is_drained_and_the_connection_goes_on(keep_alive) -> None:
    # gthread drains up to 64 KiB of an unread body before it reuses a connection (more, and
    # it closes the connection): 40,000 bytes are left here, counted by the socket reader.
    body, after = os.urandom(100_000), os.urandom(5000)
    half = 60_000
    with socket.create_connection(keep_alive, timeout=30) as sock:
        sock.sendall(put(f"/sum?read={half}", body) + put("/sum", after))
        got = answers(sock, 2)
    assert (got[0]["read"], got[0]["sha256"]) == (half, sha256(body[:half]))
    assert (got[1]["read"], got[1]["sha256"]) == (len(after), sha256(after))


def test_outside_gunicorn_the_wsgi_stream_is_read() -> None:
    sys.path.insert(0, str(HERE))
    try:
        from socket_body_app import app
    finally:
        sys.path.remove(str(HERE))
    body = os.urandom(70000)
    answer = app.test_client().put("/sum", data=body).get_json()
    assert answer == {"reader": "LimitedStream", "read": len(body), "sha256": sha256(body)}
