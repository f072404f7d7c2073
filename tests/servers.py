"""Real S3 and KMS servers for the tests, each a subprocess on a free loopback port.

- `moto_server`: moto's server mode (S3 and KMS over HTTP). It does not enforce presigned-URL
  expiry.
- `s3rver`: the node S3 server in `tests/node` (npm-installed). It enforces presigned-URL expiry
  and SigV4 signatures, so expiry tests run against it.
- `oidc_provider`: panva's `oidc-provider` (npm, a certified OpenID Provider) run by
  `tests/node/oidc_provider.mjs`, with one static client and a few test accounts.

Each server is asked for port 0 and announces the port it bound, so there is no race for a
"free" port. Its output goes to a log file in its work directory (never a pipe nobody reads),
and the log's tail is in the error if the server does not come up. Use them through the
session-scoped fixtures in conftest.py, which skip (locally) or fail (CI) when a server's
program is missing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3

TESTS_DIR = Path(__file__).resolve().parent
S3RVER_JS = TESTS_DIR / "node" / "node_modules" / "s3rver" / "bin" / "s3rver.js"
OIDC_PROVIDER_JS = TESTS_DIR / "node" / "oidc_provider.mjs"
OIDC_PROVIDER_PACKAGE = TESTS_DIR / "node" / "node_modules" / "oidc-provider" / "package.json"
START_TIMEOUT_S = 30


@dataclass(frozen=True)
class Endpoint:
    """Where a test server listens and the (fake) credentials it accepts."""

    name: str
    url: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    def session(self) -> boto3.session.Session:
        """A boto3 session with exactly these credentials (never the developer's own).

        One per endpoint: botocore loads its service models once per session, which is most
        of the cost of making a client. Tests run in one thread, so sharing it is safe.
        """
        return self._session

    @functools.cached_property
    def _session(self) -> boto3.session.Session:
        import boto3

        return boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )

    @functools.cache
    def client(self, service: str) -> Any:
        from botocore.config import Config

        config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard"})
        return self.session().client(service, endpoint_url=self.url, config=config)

    def env(self) -> dict[str, str]:
        """Environment variables for a subprocess (e.g. the broker) using this endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }


def moto_server_command() -> list[str] | None:
    """How to run moto's server from this venv, or None if moto[server] is not installed."""
    binary = Path(sys.executable).with_name("moto_server")
    if binary.exists():
        return [str(binary)]
    if find_spec("moto") is not None and find_spec("flask") is not None:
        return [sys.executable, "-m", "moto.server"]
    return None


def s3rver_command() -> list[str] | None:
    """How to run s3rver, or None if node or the npm package is missing."""
    node = shutil.which("node")
    if node is None or not S3RVER_JS.exists():
        return None
    return [node, str(S3RVER_JS)]


@contextlib.contextmanager
def moto_server(workdir: Path, command: list[str],
                extra_env: dict[str, str] | None = None) -> Iterator[Endpoint]:
    args = [*command, "-H", "127.0.0.1", "-p", "0"]
    pattern = r"Running on http://127\.0\.0\.1:(\d+)"
    with _server("moto_server", args, workdir, pattern, extra_env) as port:
        yield Endpoint("moto", f"http://127.0.0.1:{port}", "testing", "testing")


@contextlib.contextmanager
def s3rver(workdir: Path, command: list[str]) -> Iterator[Endpoint]:
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    args = [*command, "-d", str(data), "-a", "127.0.0.1", "-p", "0", "--silent"]
    pattern = r"S3rver listening on 127\.0\.0\.1:(\d+)"
    with _server("s3rver", args, workdir, pattern) as port:
        # s3rver's one hard-coded account
        yield Endpoint("s3rver", f"http://127.0.0.1:{port}", "S3RVER", "S3RVER")


@dataclass(frozen=True)
class OidcClient:
    """A client registered statically at the test OpenID Provider (the broker under test)."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]


@dataclass(frozen=True)
class OidcProvider:
    """A running test OpenID Provider: its issuer URL and the client registered there."""

    issuer: str
    client: OidcClient

    def tamper(self, mode: str = "") -> None:
        """Make the token endpoint hand out damaged ID tokens (see oidc_provider.mjs for the
        modes); an empty mode stops it."""
        request = urllib.request.Request(
            f"{self.issuer}/__test__/tamper?mode={mode}", data=b"", method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response) == {"tamper": mode}


def oidc_provider_command() -> list[str] | None:
    """How to run the test OpenID Provider, or None if node or the npm package is missing."""
    node = shutil.which("node")
    if node is None or not OIDC_PROVIDER_PACKAGE.exists():
        return None
    return [node, str(OIDC_PROVIDER_JS)]


@contextlib.contextmanager
def oidc_provider(workdir: Path, command: list[str], client: OidcClient) -> Iterator[OidcProvider]:
    clients = [{"client_id": client.client_id, "client_secret": client.client_secret,
                "redirect_uris": list(client.redirect_uris)}]
    pattern = r"oidc-provider listening on http://127\.0\.0\.1:(\d+)"
    env = {"OIDC_CLIENTS": json.dumps(clients)}
    with _server("oidc-provider", command, workdir, pattern, env) as port:
        yield OidcProvider(f"http://127.0.0.1:{port}", client)


@contextlib.contextmanager
def _server(
    name: str,
    args: list[str],
    workdir: Path,
    port_pattern: str,
    extra_env: dict[str, str] | None = None,
) -> Iterator[int]:
    """Run `args` until the with-block ends; yield the port it announced in its log."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    # The developer's AWS settings must not leak into a test server.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    env.update(extra_env or {})
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # Linux: the server dies with the test run
        )
    try:
        port = _wait_until_up(name, process, log, port_pattern)
        yield port
    finally:
        _stop(process)


def _wait_until_up(name: str, process: subprocess.Popen, log: Path, pattern: str) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    port = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if port is None:
            found = re.search(pattern, log.read_text(errors="replace"))
            port = int(found[1]) if found else None
        if port is not None and _answers(f"http://127.0.0.1:{port}/"):
            return port
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:]
    _stop(process)
    raise RuntimeError(
        f"{name} did not come up within {START_TIMEOUT_S} s "
        f"(exit code {process.returncode}); log {log}:\n{tail}"
    )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is serving
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _die_with_parent() -> None:
    """Linux: stop the server if the test process dies without cleaning up (e.g. SIGKILL)."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
