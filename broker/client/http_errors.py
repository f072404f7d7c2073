"""What went wrong talking to the broker or the object store, in words a person can act on: the
errors (`BrokerError` carries the broker's problem+json detail and hint), reading a problem
from an answer, and naming a failed connection without its URL (presigned URLs are credentials).
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any
from urllib.parse import urlsplit

import urllib3

from broker.errors import EscrowError


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


def problem_of(response: urllib3.BaseHTTPResponse) -> dict[str, Any] | None:
    """The answer's problem+json object (or a JSON object with a detail or title), if any."""
    if "json" not in response.headers.get("Content-Type", ""):
        return None
    try:
        payload = json.loads(response.data or b"null")
    except ValueError:
        return None
    if isinstance(payload, dict) and ("detail" in payload or "title" in payload):
        return payload
    return None


def problem_error(status: int, problem: dict[str, Any]) -> BrokerError:
    title = str(problem.get("title") or "error")
    return BrokerError(status, title, str(problem.get("detail") or title),
                       str(problem.get("hint") or ""),
                       str(problem.get("type") or "about:blank"))


def reason_of(error: BaseException) -> str:
    """A short reason for a connection failure, without URLs (which may carry signatures)."""
    inner = error
    while isinstance(reason := getattr(inner, "reason", None), BaseException):
        inner = reason
    text = type(inner).__name__
    message = str(inner)
    for marker in ("Connection refused", "timed out", "reset by peer", "Broken pipe",
                   "Name or service not known", "Remote end closed", "IncompleteRead"):
        if marker.lower() in message.lower():
            return f"{text} ({marker.lower()})"
    return text


def never_reached(error: BaseException) -> str | None:
    """Why a connection could not even be opened (refused, or an unknown host name), or None
    when it may have been opened (a timeout, a reset: the request may have arrived)."""
    seen: set[int] = set()
    inner: BaseException | None = error
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, ConnectionRefusedError):
            return "connection refused"
        if isinstance(inner, socket.gaierror) or type(inner).__name__ == "NameResolutionError":
            return "the host name is not known"
        reason = getattr(inner, "reason", None)
        inner = reason if isinstance(reason, BaseException) else (
            inner.__cause__ or inner.__context__)
    return None


def not_a_broker(base_url: str, why: str) -> BrokerUnreachable:
    """The error for a broker URL where nothing could be reached on first contact."""
    return BrokerUnreachable(
        f"cannot reach a broker at {base_url}: {why}",
        hint="check --broker (or ESCROW_BROKER): is it the broker's URL, and is the broker "
        "running there? (`escrow serve` prints the URL it listens on)",
    )


def store_host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or "the object store"


def store_problem(response: urllib3.BaseHTTPResponse) -> tuple[str, str, str]:
    """(code, message, hint): S3's XML <Code>/<Message>, or the title, detail and hint of a
    problem+json from the broker's local store."""
    data = response.data or b""
    try:
        payload = json.loads(data)
        if isinstance(payload, dict):
            return (str(payload.get("title") or ""), str(payload.get("detail") or ""),
                    str(payload.get("hint") or ""))
    except ValueError:
        pass
    code = re.search(rb"<Code>([^<]{1,100})</Code>", data)
    message = re.search(rb"<Message>([^<]{1,300})</Message>", data)
    return (code.group(1).decode(errors="replace") if code else "",
            message.group(1).decode(errors="replace") if message else "", "")
