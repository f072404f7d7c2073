"""Fixtures for `escrow fetch`: the real broker app served over HTTP in a thread, a sealed
deposit made through the deposit API (`tests/api/conftest.py`'s `Lab`), and a researcher with
a proven key and an active grant seeded with the grants service.

The grant is made in the database (an approved request and `grants.create_grant`), not through
policies and reviews: what is under test here is the client; the release, manifest and grant
list routes are the broker's real ones (`broker/api/access.py`).

`served` counts the bytes the store's URLs answered, to prove a resumed fetch downloads only
what is missing.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from api_deposit import depositor_token
from fetch_support import Researcher
from werkzeug.serving import make_server


def _api_support():
    """tests/api/conftest.py as a module of its own name (every conftest is "conftest")."""
    path = Path(__file__).resolve().parents[1] / "api" / "conftest.py"
    spec = importlib.util.spec_from_file_location("fetch_api_support", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


Lab = _api_support().Lab


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: these tests exercise the client; the server's SQL is tested elsewhere."""
    import shutil

    path = tmp_path / "escrow.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock


@pytest.fixture
def settings(tmp_path: Path, database_url: str, listener: socket.socket):
    from broker.config import load_settings

    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    return load_settings({"ESCROW_DATA_DIR": str(tmp_path / "data"),
                          "ESCROW_DATABASE_URL": database_url, "ESCROW_PUBLIC_URL": url})


@dataclass
class Served:
    """Bytes the local store's download URLs sent, per request."""

    requests: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        return sum(self.requests)

    def settle(self, quiet_s: float = 0.3) -> None:
        """Wait until no response was counted for `quiet_s` (a stopped client's last GETs)."""
        last, since = -1, time.monotonic()
        while time.monotonic() - since < quiet_s:
            if len(self.requests) != last:
                last, since = len(self.requests), time.monotonic()
            time.sleep(0.05)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()


class CountingApp:
    def __init__(self, app, served: Served) -> None:
        self.app, self.served = app, served

    def __call__(self, environ, start_response):
        body = self.app(environ, start_response)
        if not environ.get("PATH_INFO", "").startswith("/store/v1/") \
                or environ.get("REQUEST_METHOD") != "GET":
            return body
        return self._count(body)

    def _count(self, body):
        sent = 0
        try:
            for piece in body:
                sent += len(piece)
                yield piece
        finally:
            with self.served.lock:
                self.served.requests.append(sent)
            if hasattr(body, "close"):
                body.close()


@pytest.fixture
def served() -> Served:
    return Served()


@pytest.fixture
def broker_url(app, listener: socket.socket, served: Served) -> Iterator[str]:
    port = listener.getsockname()[1]
    server = make_server("127.0.0.1", port, CountingApp(app, served), threaded=True,
                         fd=listener.fileno())
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


@pytest.fixture
def lab(escrow, client) -> Lab:
    return Lab(client=client, token=depositor_token(escrow))


@pytest.fixture
def researcher(escrow, tmp_path: Path) -> Researcher:
    from broker import age
    from broker.domain.principals import OPERATOR
    from broker.services import people, sessions

    identity = age.generate_x25519_identity()
    path = tmp_path / "key.txt"
    path.write_text(identity.encode() + "\n")
    path.chmod(0o600)
    with escrow.uow() as uow:
        user = people.upsert_user(
            uow, OPERATOR, "https://idp.uni.example", "ada@uni.example",
            people.Claims(email="ada@uni.example", email_verified=True, name="Ada"))
        session = sessions.start_session(uow, user, "device", user.issuer, datetime.now(UTC))
        pair = sessions.issue_tokens(uow, session)
        uow.commit()
        return Researcher(pair.access_token, identity, path, user.id)


