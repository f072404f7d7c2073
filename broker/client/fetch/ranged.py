"""Ranged GETs of presigned payload URLs, retried like the client's API calls; an expired URL is
released anew once."""

from __future__ import annotations

import json
import re
import time
from typing import Any, Protocol

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from broker.client.http import USER_AGENT, BrokerClient, BrokerUnreachable, StoreError, store_host

STORE_RETRY = frozenset({429, 500, 502, 503, 504})


class SignedUrl(Protocol):
    """Where an object is read: a presigned URL, renewed by asking the broker again (a file's
    key release, broker.client.fetch.release; a study's capture, broker.client.studies)."""

    def current(self) -> tuple[str, dict[str, str], int]: ...

    def renew(self, seen_generation: int | None = None) -> None: ...


class RangeReader:
    """Ranged GETs of presigned payload URLs, retried like the client's API calls."""

    def __init__(self, client: BrokerClient, on_bytes: Any = None) -> None:
        self.client = client
        self.timeout = urllib3.Timeout(connect=10, read=120)
        self.on_bytes = on_bytes

    def read_into(self, release: SignedUrl, start: int, view: memoryview) -> int:
        """Fill `view` with payload bytes [start, start + len(view)); return the object size."""
        delays = iter(self.client.retry.delays())
        renewed = False
        while True:
            url, headers, generation = release.current()
            host = store_host(url)
            try:
                return self._attempt(url, headers, start, view)
            except _StoreTransient as transient:
                wait = next(delays, None)
                if wait is None and transient.status:  # it answered, just not well
                    raise StoreError(
                        f"the object store at {host} kept failing a download: {transient}",
                        hint="the store is failing or overloaded: run the same command again "
                        "later (nothing verified is lost); if it persists, tell the broker's "
                        "operator",
                        status_code=transient.status,
                    ) from None
                if wait is None:
                    raise BrokerUnreachable(
                        f"the object store at {host} went away: {transient}",
                        hint="nothing verified is lost: run the same command again when it is "
                        "back, and it resumes where it stopped",
                    ) from None
                if self.client.on_retry:
                    self.client.on_retry(str(transient), wait)
                time.sleep(wait)
            except StoreError as error:
                if not error.url_expired or renewed:
                    raise
                renewed = True  # an expired URL: one new release, then the store's word stands
                release.renew(generation)

    def _attempt(self, url: str, headers: dict[str, str], start: int, view: memoryview) -> int:
        end = start + len(view) - 1
        host = store_host(url)
        try:
            response = self.client.pool.request(
                "GET",
                url,
                headers={**headers, "Range": f"bytes={start}-{end}", "User-Agent": USER_AGENT},
                preload_content=False,
                decode_content=False,
                redirect=False,
                timeout=self.timeout,
            )
        except (Urllib3Error, OSError) as error:
            raise _StoreTransient(f"no answer: {type(error).__name__}") from None
        try:
            if response.status != 206:
                data = response.read(4096)
                problem = _store_problem_of(data, response.headers.get("Content-Type", ""))
                if response.status in STORE_RETRY and problem is None:
                    raise _StoreTransient(f"it answered HTTP {response.status}", response.status)
                detail, hint = problem or (data[:200].decode(errors="replace"), "")
                raise StoreError(
                    f"the object store at {host} refused a download: HTTP {response.status}"
                    + (f" ({detail})" if detail else ""),
                    hint=hint
                    or "run the same command again; if it keeps failing, tell the "
                    "broker's operator",
                    status_code=response.status,
                )
            total = _content_range_total(response.headers.get("Content-Range", ""))
            filled = 0
            body = _body_reader(response)
            try:
                while filled < len(view):
                    got = body.readinto(view[filled : filled + (1 << 20)])
                    if not got:
                        break
                    filled += got
                    if self.on_bytes:
                        self.on_bytes(got)
            except (Urllib3Error, OSError) as error:
                raise _StoreTransient(f"no answer: {type(error).__name__}") from None
            if filled != len(view):
                raise _StoreTransient(f"the answer ended after {filled} of {len(view)} bytes")
            return total
        finally:
            response.release_conn()


def _body_reader(response: urllib3.BaseHTTPResponse) -> Any:
    """What fills a buffer with the answer's body. urllib3's own `readinto` reads into a new
    bytes object and copies it (an allocation and two copies per read); the `http.client`
    response under it reads from the socket straight into the buffer. Nothing is decoded
    (`decode_content=False`), so both give the same bytes. That response is urllib3's private
    `_fp`: where a urllib3 release lacks it, urllib3's own reader is used."""
    raw = getattr(response, "_fp", None)
    return raw if hasattr(raw, "readinto") else response


class _StoreTransient(Exception):
    """A failed download attempt worth retrying; `status` is the HTTP status if the store
    answered (0: nothing answered)."""

    def __init__(self, reason: str, status: int = 0) -> None:
        super().__init__(reason)
        self.status = status


def _store_problem_of(data: bytes, content_type: str) -> tuple[str, str] | None:
    """(detail, hint) of a problem+json answer (the broker's local store states a problem:
    final, not retried), or None."""
    if "json" not in content_type:
        return None
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    if not isinstance(payload, dict) or "detail" not in payload:
        return None
    return str(payload.get("detail") or ""), str(payload.get("hint") or "")


def _content_range_total(value: str) -> int:
    match = re.fullmatch(r"bytes \d+-\d+/(\d+)", value.strip())
    return int(match[1]) if match else -1
