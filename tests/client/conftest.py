"""Fixtures for the client's end-to-end tests: a real broker process behind a TCP proxy.

Every byte between `escrow deposit` and the broker (API calls and the local store's presigned
part uploads, whose URLs follow `ESCROW_PUBLIC_URL`) goes through `Proxy`, which the tests use
to slow the upload down (so a kill -9 lands mid-upload), to count what was re-sent after a
resume, and to make the broker "go away" mid-upload.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from live import ESCROW_BIN, BrokerProcess, start_broker


class Proxy:
    """A loopback TCP proxy with a rate limit, an upload byte counter and an off switch."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.target: tuple[str, int] | None = None
        self.rate_bps: float | None = None  # client -> broker
        self.slow_after: int | None = None  # apply rate_bps only after this many bytes
        self.cut_after: int | None = None  # go down once this many bytes went up
        self.down = False
        self.bytes_up = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.rate_bps, self.slow_after, self.cut_after = None, None, None
            self.down, self.bytes_up = False, 0

    def wait_idle(self, quiet_s: float = 0.3) -> None:
        """Until nothing went up for `quiet_s` (a killed client's socket buffers drained)."""
        last, since = -1, time.monotonic()
        while time.monotonic() - since < quiet_s:
            if self.bytes_up != last:
                last, since = self.bytes_up, time.monotonic()
            time.sleep(0.05)

    def go_down(self) -> None:
        with self._lock:
            self.down = True
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
            self._sockets.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down or self.target is None:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while True:
                data = src.recv(256 * 1024)
                if not data:
                    break
                if up:
                    with self._lock:
                        self.bytes_up += len(data)
                        cut = self.cut_after is not None and self.bytes_up > self.cut_after
                    if cut:
                        self.go_down()
                        return
                    rate = self.rate_bps
                    if rate and (self.slow_after is None or self.bytes_up > self.slow_after):
                        time.sleep(len(data) / rate)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Lab:
    """What a lab's machine has: a config dir (pins, journals) and the broker's address."""

    broker: BrokerProcess
    proxy: Proxy
    config_dir: Path
    env: dict[str, str]

    def deposit(self, *args: str, **env: str) -> Ran:
        """Run `escrow deposit` in this process (a new interpreter per run costs ~1.5 s of
        imports; kill -9 tests use `start_deposit`). The environment is exactly the lab's."""
        from click.testing import CliRunner

        from broker.cli.deposit import deposit

        runner = CliRunner(env={**{k: None for k in os.environ}, **self.env, **env})
        result = runner.invoke(deposit, list(args), catch_exceptions=False)
        return Ran(result.exit_code, result.stdout, result.stderr)

    def start_deposit(self, *args: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            [ESCROW_BIN, "deposit", *args], env={**self.env, **env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def journal_files(self) -> list[Path]:
        return sorted((self.config_dir / "journal").glob("*.json"))

    def objects(self, deposit_id: str) -> Path:
        return self.broker.data_dir / "objects" / "deposits" / deposit_id


def kill9(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def proxied_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess,
                                                                                Proxy]]:
    """One broker for the session (SQLite, local store), reached through a Proxy."""
    proxy = Proxy()
    base = tmp_path_factory.mktemp("broker")
    broker = start_broker(base, {"ESCROW_PUBLIC_URL": proxy.url})
    port = int(broker.url.rsplit(":", 1)[1])
    proxy.target = ("127.0.0.1", port)
    yield broker, proxy
    broker.stop()
    proxy.listener.close()


@pytest.fixture
def lab(proxied_broker: tuple[BrokerProcess, Proxy], tmp_path: Path) -> Iterator[Lab]:
    broker, proxy = proxied_broker
    proxy.reset()
    config = tmp_path / "lab-config"
    env = {
        **broker.env,
        "ESCROW_BROKER": proxy.url,
        "ESCROW_CONFIG_DIR": str(config),
        "ESCROW_CLIENT_RETRIES": "2",
        "ESCROW_CLIENT_BACKOFF_S": "0.05",
    }
    yield Lab(broker, proxy, config, env)
    proxy.reset()


def have_age_tool() -> bool:
    return shutil.which("age") is not None
