"""A TCP proxy on loopback that a test can make misbehave: the network between the broker and
PostgreSQL (or any server), as it fails in production.

Modes, switched at any time by the test:
- "pass": bytes flow both ways;
- "hang": connections are accepted and stay open, but nothing is forwarded either way (a
  stalled network path, or a server that stopped answering while its kernel still
  acknowledges: nothing tells the client that anything is wrong);
- "reset": every open connection is closed with a TCP reset, and new ones are reset at once
  (a restarted server, a firewall that lost its state).
`tap(direction, data)` sees every chunk before it is forwarded and may return True to reset
that connection right there, e.g. in the middle of a COMMIT.

It runs on a thread of the test process and forwards real bytes between real sockets, so the
client and the server see exactly what a broken network does to them.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

PASS, HANG, RESET = "pass", "hang", "reset"
TO_SERVER, TO_CLIENT = "to_server", "to_client"


@dataclass(eq=False)
class _Pair:
    client: socket.socket
    server: socket.socket
    closed: bool = False


class FaultProxy:
    def __init__(self, target: tuple[str, int],
                 tap: Callable[[str, bytes], bool] | None = None) -> None:
        self.target = target
        self.tap = tap
        self.mode = PASS
        self.connections = 0
        self.resets = 0
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        # Everything is watched in `_all`; while hanging, only `_control` (accept, wake-up).
        self._all = selectors.DefaultSelector()
        self._control = selectors.DefaultSelector()
        for selector in (self._all, self._control):
            selector.register(self._listener, selectors.EVENT_READ, "accept")
            selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def set_mode(self, mode: str) -> None:
        with self._lock:
            self.mode = mode
            if mode == RESET:
                for pair in list(self._pairs):
                    self._reset(pair)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        with self._lock:
            for pair in list(self._pairs):
                self._close(pair)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            selector = self._control if self.mode == HANG else self._all
            for key, _ in selector.select(timeout=0.2):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                elif self.mode != HANG:
                    self._forward(*key.data)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        with self._lock:
            if self.mode == RESET:
                _abort(client)
                self.resets += 1
                return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            _abort(client)
            return
        pair = _Pair(client, server)
        with self._lock:
            self._pairs.append(pair)
            self.connections += 1
        self._all.register(client, selectors.EVENT_READ, (pair, TO_SERVER))
        self._all.register(server, selectors.EVENT_READ, (pair, TO_CLIENT))

    def _forward(self, pair: _Pair, direction: str) -> None:
        source, sink = (
            (pair.client, pair.server) if direction == TO_SERVER else (pair.server, pair.client)
        )
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        with self._lock:
            if pair.closed:
                return
            if not data:
                self._close(pair)
            elif self.tap is not None and self.tap(direction, data):
                self._reset(pair)
            else:
                try:
                    sink.sendall(data)
                except OSError:
                    self._close(pair)

    def _reset(self, pair: _Pair) -> None:
        self._end(pair, _abort)
        self.resets += 1

    def _close(self, pair: _Pair) -> None:
        self._end(pair, lambda sock: sock.close())

    def _end(self, pair: _Pair, how: Callable[[socket.socket], None]) -> None:
        if pair.closed:
            return
        pair.closed = True
        for sock in (pair.client, pair.server):
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._all.unregister(sock)
            with contextlib.suppress(OSError):
                how(sock)
        with contextlib.suppress(ValueError):
            self._pairs.remove(pair)


def _abort(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a FIN: the peer sees 'connection reset'."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
