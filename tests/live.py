"""Live parts the tests talk to, and the switch that makes a missing one fail in CI.

Tests that need a live part (PostgreSQL, an S3 server, the Debian `age` tool, node) call
`require_part` (or the fixture of the same name). Locally a missing part skips the test with the
reason; in CI (`ESCROW_TEST_REQUIRE_ALL=1`) a missing part fails it, so CI can never pass by
skipping. Import from here (`from live import …`), never from a conftest: every conftest module
is named "conftest", so such an import is ambiguous.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from broker.cli.serving import stop_group, wait_until_serving

REQUIRE_ALL = os.environ.get("ESCROW_TEST_REQUIRE_ALL") == "1"
ESCROW_BIN = str(Path(sys.executable).with_name("escrow"))
POSTGRES_ADMIN_URL = os.environ.get(
    "ESCROW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def postgres_url(database: str) -> str:
    """The URL of another database on the test PostgreSQL server."""
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


def require_part(available: bool, what: str) -> None:
    """Skip (locally) or fail (CI) when a live part a test needs is missing."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{what} is required (ESCROW_TEST_REQUIRE_ALL=1) but missing", pytrace=False)
    pytest.skip(f"{what} is missing")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- a real broker process -------------------------------------------------------------------


@dataclass
class BrokerProcess:
    """`escrow serve` running on loopback with its own data dir, org and depositor token."""

    url: str
    env: dict[str, str]
    data_dir: Path
    token: str
    org: str = "acme-ai"
    process: subprocess.Popen | None = None
    log: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def escrow(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run an `escrow` command with this broker's environment."""
        result = subprocess.run(
            [ESCROW_BIN, *args], env=self.env, capture_output=True, text=True, timeout=300,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"escrow {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def last_json(self, result: subprocess.CompletedProcess) -> dict:
        return json.loads(result.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        """Stop the broker and everything it started (gunicorn workers, the job worker)."""
        if self.process:
            stop_group(self.process, timeout_s=10)

    def start(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        self.log = self.data_dir.parent / "broker.log"
        self.process = subprocess.Popen(
            [ESCROW_BIN, "serve", "--host", "127.0.0.1", "--port", port, "--workers", "2"],
            env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() ends every child
        )
        if wait_until_serving(self.url, self.process, timeout_s=30):
            return
        raise AssertionError(f"broker did not start:\n{self.log.read_text()}")


def start_broker(base: Path, extra_env: dict[str, str] | None = None) -> BrokerProcess:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")},
        "ESCROW_DATA_DIR": str(base / "data"),
        "ESCROW_PUBLIC_URL": url,
        "ESCROW_CONFIG_DIR": str(base / "client-config"),
        "ESCROW_BROKER": url,
        "ESCROW_POLICY_DIR": str(Path(__file__).resolve().parents[1] / "policies"),
        **(extra_env or {}),
    }
    broker = BrokerProcess(url=url, env=env, data_dir=base / "data", token="")
    broker.token = _prepare_broker(env, broker.org)
    broker.env["ESCROW_TOKEN"] = broker.token
    broker.start()
    return broker


@contextmanager
def _aws_environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _prepare_broker(env: dict[str, str], org: str) -> str:
    """What `escrow init`, `admin org create` and `admin token create` do, in-process (fast)."""
    from broker.config import load_settings
    from broker.domain.principals import OPERATOR
    from broker.services import admin
    from broker.services.setup import initialise

    with _aws_environment(env):  # boto3 (an S3 store) reads credentials from os.environ
        escrow, _ = initialise(load_settings(env))
    with escrow.uow() as uow:
        admin.create_org(uow, OPERATOR, org)
    with escrow.uow() as uow:
        token = admin.create_token(uow, OPERATOR, org, "depositor", days=1).token
    escrow.engine.dispose()
    return token
