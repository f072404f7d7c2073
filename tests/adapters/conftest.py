"""Fixtures for the adapter tests: local stores, a Flask app serving store URLs, live servers.

The live S3 servers (`moto_endpoint`, `s3rver_endpoint`) are fixtures of tests/conftest.py.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from broker.adapters.objectstore.local import LocalStore

from .support import Clock, make_local_store, make_store_app


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def local_store(tmp_path: Path, clock: Clock) -> LocalStore:
    return make_local_store(tmp_path, "http://broker.test", clock)


@pytest.fixture
def store_client(local_store: LocalStore) -> FlaskClient:
    return make_store_app(local_store).test_client()


@pytest.fixture
def live_store(tmp_path: Path, clock: Clock) -> Iterator[LocalStore]:
    """A local store whose URLs are served by a real HTTP server on a loopback port."""
    app = make_store_app(None)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    store = make_local_store(tmp_path, f"http://127.0.0.1:{server.server_port}", clock)
    app.extensions["escrow"].store = store
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="store-urls", daemon=True
    )
    thread.start()
    yield store
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def bucket_name() -> str:
    return f"escrow-{uuid.uuid4().hex[:16]}"
