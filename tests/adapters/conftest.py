"""Fixtures for the adapter tests: local stores, a Flask app serving store URLs, live servers.

The two session fixtures `moto_endpoint` and `s3rver_endpoint` are meant to move to
tests/conftest.py (see the block marked "move"); `tests/adapters/__init__.py` makes this file
the module `adapters.conftest`, so `from conftest import require_part` finds the suite's root
conftest instead of this file.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import servers
from conftest import require_part
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from broker.adapters.objectstore.local import LocalStore

from .support import Clock, make_local_store, make_store_app

# --- move to tests/conftest.py: real S3 / KMS servers ---------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Endpoint]:
    """moto's server (S3 and KMS over HTTP) in a subprocess, for the whole session."""
    command = servers.moto_server_command()
    require_part(command is not None, "moto_server (pip install 'moto[server]')")
    with servers.moto_server(tmp_path_factory.mktemp("moto"), command) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3rver_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Endpoint]:
    """s3rver (node; enforces presigned-URL expiry) in a subprocess, for the whole session."""
    command = servers.s3rver_command()
    require_part(command is not None, f"node and s3rver ({servers.S3RVER_JS}; run make test-peers)")
    with servers.s3rver(tmp_path_factory.mktemp("s3rver"), command) as endpoint:
        yield endpoint


# --- end of the block to move ---------------------------------------------------------------


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
