"""A small client for the broker's JSON API and for the object store's presigned URLs.

One urllib3 `PoolManager` per client, shared by every thread. JSON in and out; an RFC 9457
problem+json answer becomes a `BrokerError` carrying the broker's `detail` and `hint`, and that
is what the user is told, whatever the status.

Retried, with exponential back-off, a bounded number of times within a bounded total time
(`RetryPolicy`, from `ESCROW_CLIENT_*`), only what a retry can fix: no answer at all
(connection refused or reset, timeouts), a 502/503/504 that is not the broker's own problem
(a proxy's or load balancer's page), 429, and the broker's 503 "outcome unknown" (a commit
whose result it could not learn: the retry carries the same Idempotency-Key, so the broker
answers with the first outcome instead of doing it twice). A problem the broker states (a
503 "database unavailable", a 507 "store full") is printed as the broker's words at once.
The object store's 500/502/503/504/429 are retried (S3 asks for that), and then reported as
what the store answered, with the local store's own hint.
When the retries run out, the error says what happened: `BrokerUnreachable` ("went away")
only when nothing answered; otherwise what answered, and how.

No answer is retried only from a broker that answered before in this run: a connection
refused, or a host name that does not resolve, on first contact is a wrong `--broker` (or a
broker not started), said at once with the URL, never waited out.

Every state-changing call (POST/PUT/PATCH/DELETE under /api/v1) carries an
`Idempotency-Key: <uuid4>`, one per call, the same on each of its retries.

Secrets: the token is only ever put in the Authorization header. Presigned URLs are credentials
too (whoever holds one may upload), so errors about the store name its host, never the URL.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from broker.client.http_errors import BrokerError as BrokerError
from broker.client.http_errors import BrokerUnreachable as BrokerUnreachable
from broker.client.http_errors import StoreError as StoreError
from broker.client.http_errors import never_reached as never_reached
from broker.client.http_errors import not_a_broker as not_a_broker
from broker.client.http_errors import problem_error as problem_error
from broker.client.http_errors import problem_of, reason_of, store_problem
from broker.client.http_errors import store_host as store_host
from broker.errors import EscrowError, Unauthorized

T = TypeVar("T")

if TYPE_CHECKING:
    from broker.auditlog.checkpoint import Checkpoint

RETRY_STATUSES = frozenset({502, 503, 504})
TOO_MANY_REQUESTS = 429
# S3 asks clients to retry its 500 InternalError too; the broker's 500 is a bug, not retried.
STORE_RETRY_STATUSES = RETRY_STATUSES | {500, TOO_MANY_REQUESTS}
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
IDEMPOTENCY_HEADER = "Idempotency-Key"
OUTCOME_UNKNOWN = "outcome-unknown"  # the end of the broker's problem type for it
USER_AGENT = "weights-escrow-client/0.1"


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
    """One attempt failed in a way worth retrying; `reason` is safe to show.

    `final` is the error to raise if the retries run out (None: nothing answered, so the
    server "went away"); `retry_after` is a wait the server asked for, in seconds."""

    def __init__(self, reason: str, final: EscrowError | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final
        self.retry_after = retry_after


RESUMES_HINT = ("nothing finished is lost: run the same command again when it is back, and it "
                "resumes where it stopped")


def _retrying(policy: RetryPolicy, what: str, attempt: Callable[[], T],
              on_retry: Callable[[str, float], None] | None = None,
              gone_hint: str | Callable[[], str] = RESUMES_HINT) -> T:
    delays = iter(policy.delays())
    tries = 0
    while True:
        tries += 1
        try:
            return attempt()
        except _Transient as transient:
            wait = next(delays, None)
            if wait is None:
                if transient.final is not None:
                    transient.final.message += (
                        f" (gave up after {tries} attempt{'s' if tries != 1 else ''})")
                    raise transient.final from None
                raise BrokerUnreachable(
                    f"{what} went away: {transient.reason} (gave up after {tries} attempt"
                    f"{'s' if tries != 1 else ''})",
                    hint=gone_hint if isinstance(gone_hint, str) else gone_hint(),
                ) from None
            if transient.retry_after is not None:
                wait = max(wait, min(transient.retry_after, policy.max_backoff_s))
            if on_retry:
                on_retry(transient.reason, wait)
            time.sleep(wait)


def _retry_after(response: urllib3.BaseHTTPResponse) -> float | None:
    value = (response.headers.get("Retry-After") or "").strip()
    return float(value) if value.isdigit() else None


def broker_transient(response: urllib3.BaseHTTPResponse, base_url: str) -> _Transient | None:
    """Whether a broker's answer is worth another try (and what to say if the tries run out):
    429; the broker's own 503 "outcome unknown"; a 502/503/504 that is not the broker's
    problem+json (a proxy or load balancer answered for it). None: the answer stands."""
    status = response.status
    if status != TOO_MANY_REQUESTS and status not in RETRY_STATUSES:
        return None
    problem = problem_of(response)
    if problem is not None:
        error = problem_error(status, problem)
        if status == TOO_MANY_REQUESTS:
            return _Transient(f"the broker is busy ({error.message})", error,
                              _retry_after(response))
        if error.problem_type.endswith(OUTCOME_UNKNOWN):
            return _Transient("the broker could not tell whether the change was made; asking "
                              "again with the same Idempotency-Key", error,
                              _retry_after(response))
        return None  # the broker's own words: no retry, the user reads them
    answered = f"HTTP {status} without a problem description"
    if status == TOO_MANY_REQUESTS:
        return _Transient(f"too many requests ({answered})", BrokerError(
            status, "too many requests",
            f"the broker at {base_url} kept answering {answered}",
            hint="wait a few minutes and run the same command again; it resumes"),
            _retry_after(response))
    return _Transient(f"something in front of the broker answered {answered}", BrokerError(
        status, "broker not answering",
        f"the broker at {base_url} did not answer: a proxy or load balancer in front of it "
        f"answered {answered}",
        hint="the broker behind it is down or overloaded: run the same command again later "
        "(nothing finished is lost); if it persists, tell the broker's operator"),
        _retry_after(response))


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
        # Whether the broker answered anything in this run: until it has, a refused connection
        # is a wrong URL (said at once); after, an outage worth waiting out.
        self.answered = False
        # What to do when the broker stops answering for good (a command that does not
        # resume, e.g. `escrow login`, says its own).
        self.gone_hint = RESUMES_HINT
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
        try:
            response = self.pool.request(
                "GET", self.base_url + path, headers=self._headers(True),
                timeout=self.api_timeout, redirect=False, preload_content=False,
            )
        except (Urllib3Error, OSError) as error:
            why = never_reached(error) if not self.answered else None
            if why is not None:
                raise not_a_broker(self.base_url, why) from None
            raise BrokerUnreachable(
                f"the broker at {self.base_url} went away: no answer: {reason_of(error)}",
                hint=self.hint_when_gone()) from None
        self.answered = True
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
        if method in STATE_CHANGING and path.startswith("/api/v1"):
            # One key per call, the same on each retry: a retried change is done only once.
            headers[IDEMPOTENCY_HEADER] = str(uuid.uuid4())
        url = self.base_url + path

        def attempt() -> Any:
            try:
                response = self.pool.request(method, url, body=data, headers=headers,
                                             timeout=self.api_timeout, redirect=False)
            except (Urllib3Error, OSError) as error:
                self.refused_on_first_contact(error)
                raise _Transient(f"no answer: {reason_of(error)}") from None
            self.answered = True
            transient = broker_transient(response, self.base_url)
            if transient is not None:
                raise transient
            return response

        response = _retrying(self.retry, f"the broker at {self.base_url}", attempt, self.on_retry,
                             self.hint_when_gone)
        return self._decode(method, path, response)

    def hint_when_gone(self) -> str:
        """What to do when the broker stopped answering: `gone_hint` if it answered before in
        this run; if it never did, nothing was done, and the URL is what to check."""
        if self.answered:
            return self.gone_hint
        return (f"nothing was done: check --broker (or ESCROW_BROKER) names the broker "
                f"({self.base_url} never answered), and that it is running")

    def refused_on_first_contact(self, error: BaseException) -> None:
        """Raise `not_a_broker` when nothing could be reached and nothing answered before."""
        why = None if self.answered else never_reached(error)
        if why is not None:
            raise not_a_broker(self.base_url, why) from None

    def _decode(self, method: str, path: str, response: urllib3.BaseHTTPResponse) -> Any:
        content_type = response.headers.get("Content-Type", "")
        if 200 <= response.status < 300:
            payload: Any = None
            if "json" in content_type:
                try:
                    payload = json.loads(response.data or b"null")
                except ValueError:
                    payload = None
            if payload is None and response.data:
                raise BrokerError(
                    response.status, "unexpected answer",
                    f"{method} {path} answered {content_type or 'no content type'}, not JSON",
                    hint=f"check that {self.base_url} is an escrow broker",
                )
            return payload
        problem = problem_of(response)
        if problem is not None:
            raise problem_error(response.status, problem)
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
                # urllib3 hands each chunk to sendall, which takes memoryviews as well
                chunks = cast("Iterable[bytes]", body()) if size else b""
                response = self.pool.request(
                    "PUT", url, body=chunks, headers=sent_headers,
                    timeout=self.upload_timeout, redirect=False, preload_content=True,
                )
            except (Urllib3Error, OSError) as error:
                raise _Transient(f"no answer: {reason_of(error)}") from None
            if 200 <= response.status < 300:
                etag: str = response.headers.get("ETag") or ""
                return etag.strip().strip('"')
            code, message, hint = store_problem(response)
            said = f"HTTP {response.status}" + (f" {code}" if code else "") + (
                f": {message}" if message else "")
            if response.status in STORE_RETRY_STATUSES:
                # Worth another try; if they run out, the store's own words (a problem+json
                # from the broker's local store keeps its hint).
                raise _Transient(f"the object store answered {said}", StoreError(
                    f"the object store at {host} kept failing a part upload: it answered "
                    f"{said}",
                    hint=hint or "the store is failing or overloaded: run the same command "
                    "again later (nothing finished is lost); if it persists, tell the broker's "
                    "operator",
                    status_code=response.status, code=code), _retry_after(response))
            raise StoreError(
                f"the object store at {host} refused a part upload: {said}",
                hint=hint or "run the same command again; if it keeps failing, tell the "
                "broker's operator",
                status_code=response.status, code=code,
            )

        return _retrying(self.retry, f"the object store at {host}", attempt, self.on_retry)

    def close(self) -> None:
        self.pool.clear()
