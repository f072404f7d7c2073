"""A small client for the broker's JSON API and for the object store's presigned URLs.

One urllib3 `PoolManager` per client, shared by every thread. JSON in and out; an RFC 9457
problem+json answer becomes a `BrokerError` carrying the broker's `detail` and `hint`.
Connection errors, timeouts and 502/503/504 answers are retried with exponential back-off, a
bounded number of times within a bounded total time (`RetryPolicy`, from `ESCROW_CLIENT_*`);
after that a `BrokerUnreachable` says that the broker (or the store) went away and that running
the same command again resumes.

Secrets: the token is only ever put in the Authorization header. Presigned URLs are credentials
too (whoever holds one may upload), so errors about the store name its host, never the URL.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from broker.errors import EscrowError, Unauthorized

if TYPE_CHECKING:
    from broker.auditlog.checkpoint import Checkpoint

RETRY_STATUSES = frozenset({502, 503, 504})
# S3 asks clients to retry its 500 InternalError too; the broker's 500 is a bug, not retried.
STORE_RETRY_STATUSES = RETRY_STATUSES | {500}
USER_AGENT = "weights-escrow-client/0.1"


class BrokerError(EscrowError):
    """The broker answered with an error (problem+json): its status, detail and hint."""

    def __init__(self, status: int, title: str, detail: str, hint: str = "",
                 problem_type: str = "about:blank") -> None:
        super().__init__(detail or title, hint=hint)
        self.status = status
        self.title = title
        self.problem_type = problem_type


class BrokerUnreachable(EscrowError):
    """The broker or the object store stayed unreachable through every retry."""

    status = 503
    title = "broker unreachable"


class StoreError(EscrowError):
    """The object store refused an upload (not a transient failure)."""

    status = 502
    title = "object store refused the upload"

    def __init__(self, message: str, *, hint: str = "", status_code: int = 0,
                 code: str = "") -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code
        self.code = code

    @property
    def url_expired(self) -> bool:
        """S3 answers 403 to an expired presigned URL; the local store answers 401/403/410."""
        return self.status_code in (401, 403, 410)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying: `attempts` in all, waits doubling from `backoff_s`, capped."""

    attempts: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_total_s: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetryPolicy:
        env = os.environ if env is None else env
        try:
            retries = int(env.get("ESCROW_CLIENT_RETRIES", "5"))
            backoff = float(env.get("ESCROW_CLIENT_BACKOFF_S", "1.0"))
            total = float(env.get("ESCROW_CLIENT_RETRY_MAX_S", "300"))
        except ValueError:
            raise EscrowError(
                "ESCROW_CLIENT_RETRIES / ESCROW_CLIENT_BACKOFF_S / ESCROW_CLIENT_RETRY_MAX_S "
                "must be numbers",
                hint="e.g. ESCROW_CLIENT_RETRIES=5 ESCROW_CLIENT_BACKOFF_S=1",
            ) from None
        return cls(attempts=max(1, retries + 1), backoff_s=max(0.0, backoff),
                   max_backoff_s=max(backoff, 30.0), max_total_s=max(0.0, total))

    def delays(self) -> Iterable[float]:
        """The waits between attempts (full jitter keeps many clients from retrying in step)."""
        started = time.monotonic()
        for attempt in range(self.attempts - 1):
            wait = min(self.max_backoff_s, self.backoff_s * 2**attempt)
            wait = wait / 2 + random.uniform(0, wait / 2)  # noqa: S311 - jitter, not a secret
            if time.monotonic() - started + wait > self.max_total_s:
                return
            yield wait


class _Transient(Exception):
    """One attempt failed in a way worth retrying; `reason` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _retrying(policy: RetryPolicy, what: str, attempt: Callable[[], Any],
              on_retry: Callable[[str, float], None] | None = None) -> Any:
    delays = iter(policy.delays())
    tries = 0
    while True:
        tries += 1
        try:
            return attempt()
        except _Transient as transient:
            wait = next(delays, None)
            if wait is None:
                raise BrokerUnreachable(
                    f"{what} went away: {transient.reason} (gave up after {tries} attempt"
                    f"{'s' if tries != 1 else ''})",
                    hint="nothing finished is lost: run the same command again when it is "
                    "back, and it resumes where it stopped",
                ) from None
            if on_retry:
                on_retry(transient.reason, wait)
            time.sleep(wait)


def _describe(error: BaseException) -> str:
    """A short reason for a connection failure, without URLs (which may carry signatures)."""
    inner = error
    while getattr(inner, "reason", None) is not None and isinstance(inner.reason, BaseException):
        inner = inner.reason
    text = type(inner).__name__
    message = str(inner)
    for marker in ("Connection refused", "timed out", "reset by peer", "Broken pipe",
                   "Name or service not known", "Remote end closed", "IncompleteRead"):
        if marker.lower() in message.lower():
            return f"{text} ({marker.lower()})"
    return text


def store_host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or "the object store"


class BrokerClient:
    """Calls to one broker, with one token. Thread-safe (urllib3 pools are)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        pool_size: int = 8,
        api_timeout: urllib3.Timeout | None = None,
        upload_timeout: urllib3.Timeout | None = None,
        on_retry: Callable[[str, float], None] | None = None,
    ) -> None:
        base_url = base_url.strip().rstrip("/")
        if not re.match(r"^https?://[^/]+", base_url):
            raise EscrowError(
                f"broker URL {base_url!r} is not an http(s) URL",
                hint="pass --broker https://escrow.example.org (or set ESCROW_BROKER)",
            )
        self.base_url = base_url
        self._token = token
        # The broker's newest audit checkpoint, once a log check on contact has verified it
        # (broker.client.checkpoints): commands that need it again do not fetch it twice.
        self.checkpoint: Checkpoint | None = None
        self.retry = retry or RetryPolicy.from_env()
        self.on_retry = on_retry
        self.api_timeout = api_timeout or urllib3.Timeout(connect=10, read=120)
        # A store may take a while to answer once it has a whole 64 MiB part.
        self.upload_timeout = upload_timeout or urllib3.Timeout(connect=10, read=600)
        self.pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, block=False,
                                        retries=False)

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    def __repr__(self) -> str:  # never the token
        return f"BrokerClient({self.base_url!r})"

    # --- the broker's JSON API -------------------------------------------------------------

    def get(self, path: str, *, auth: bool = True) -> Any:
        return self._call("GET", path, None, auth)

    def post(self, path: str, body: Any | None = None) -> Any:
        return self._call("POST", path, {} if body is None else body, True)

    def put(self, path: str, body: Any) -> Any:
        return self._call("PUT", path, body, True)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path, None, True)

    def stream(self, path: str, chunk_size: int = 65536) -> Iterator[bytes]:
        """A GET whose answer is not JSON (an export), in chunks as they arrive."""
        response = self.pool.request(
            "GET", self.base_url + path, headers=self._headers(True),
            timeout=self.api_timeout, redirect=False, preload_content=False,
        )
        try:
            if response.status != 200:
                response.read()
                self._decode("GET", path, response)
            yield from response.stream(chunk_size)
        finally:
            response.release_conn()

    def _headers(self, auth: bool) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if auth:
            if not self._token:
                raise Unauthorized(
                    "no broker token given",
                    hint="pass --token-file FILE (or --token, or set ESCROW_TOKEN)",
                )
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _call(self, method: str, path: str, body: Any | None, auth: bool) -> Any:
        headers = self._headers(auth)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        url = self.base_url + path

        def attempt() -> Any:
            try:
                response = self.pool.request(method, url, body=data, headers=headers,
                                             timeout=self.api_timeout, redirect=False)
            except (Urllib3Error, OSError) as error:
                raise _Transient(_describe(error)) from None
            if response.status in RETRY_STATUSES:
                raise _Transient(f"it answered {response.status}")
            return response

        response = _retrying(self.retry, f"the broker at {self.base_url}", attempt, self.on_retry)
        return self._decode(method, path, response)

    def _decode(self, method: str, path: str, response: urllib3.BaseHTTPResponse) -> Any:
        content_type = response.headers.get("Content-Type", "")
        payload: Any = None
        if "json" in content_type:
            try:
                payload = json.loads(response.data or b"null")
            except ValueError:
                payload = None
        if 200 <= response.status < 300:
            if payload is None and response.data:
                raise BrokerError(
                    response.status, "unexpected answer",
                    f"{method} {path} answered {content_type or 'no content type'}, not JSON",
                    hint=f"check that {self.base_url} is an escrow broker",
                )
            return payload
        if isinstance(payload, dict) and ("detail" in payload or "title" in payload):
            title = str(payload.get("title") or "error")
            raise BrokerError(response.status, title, str(payload.get("detail") or title),
                              str(payload.get("hint") or ""),
                              str(payload.get("type") or "about:blank"))
        raise BrokerError(
            response.status, "unexpected answer",
            f"{method} {path} answered HTTP {response.status} without a problem description",
            hint=f"check that {self.base_url} is an escrow broker (and not a proxy's error page)",
        )

    # --- presigned uploads to the object store ---------------------------------------------

    def put_part(
        self,
        url: str,
        headers: Mapping[str, str],
        size: int,
        body: Callable[[], Iterable[bytes | memoryview]],
    ) -> str:
        """PUT `size` bytes to a presigned URL (no broker token); returns the ETag.

        `body()` is called once per attempt and must produce the same bytes each time. The body
        is streamed with a Content-Length (never chunked: S3 refuses chunked presigned PUTs).
        """
        sent_headers = {"Content-Length": str(size), "User-Agent": USER_AGENT, **headers}
        host = store_host(url)

        def attempt() -> str:
            try:
                response = self.pool.request(
                    "PUT", url, body=body() if size else b"", headers=sent_headers,
                    timeout=self.upload_timeout, redirect=False, preload_content=True,
                )
            except (Urllib3Error, OSError) as error:
                raise _Transient(_describe(error)) from None
            if response.status in STORE_RETRY_STATUSES:
                raise _Transient(f"it answered {response.status}")
            if not 200 <= response.status < 300:
                code, message = _store_problem(response)
                raise StoreError(
                    f"the object store at {host} refused a part upload: HTTP {response.status}"
                    + (f" {code}" if code else "") + (f": {message}" if message else ""),
                    hint="run the same command again; if it keeps failing, tell the operator",
                    status_code=response.status, code=code,
                )
            return (response.headers.get("ETag") or "").strip().strip('"')

        return _retrying(self.retry, f"the object store at {host}", attempt, self.on_retry)

    def close(self) -> None:
        self.pool.clear()


def _store_problem(response: urllib3.BaseHTTPResponse) -> tuple[str, str]:
    """S3's XML <Code>/<Message>, or a problem+json detail from the local store."""
    data = response.data or b""
    try:
        payload = json.loads(data)
        if isinstance(payload, dict):
            return str(payload.get("title") or ""), str(payload.get("detail") or "")
    except ValueError:
        pass
    code = re.search(rb"<Code>([^<]{1,100})</Code>", data)
    message = re.search(rb"<Message>([^<]{1,300})</Message>", data)
    return (code.group(1).decode(errors="replace") if code else "",
            message.group(1).decode(errors="replace") if message else "")
