"""Answers of the model workers' routes (hosted access). The /v1 routes answer OpenAI's own
shapes, not these."""

from __future__ import annotations

from typing_extensions import TypedDict


class WorkerRegistration(TypedDict):
    """A model worker registered: its id, and the secret the broker sends on every call."""

    worker_id: str
    secret: str
    """the worker checks it on every call (X-Escrow-Worker-Secret); also its heartbeat's"""
    heartbeat_s: float


class WorkerHeartbeat(TypedDict):
    worker_id: str
    heartbeat_s: float


class WorkerStopped(TypedDict):
    worker_id: str
    stopped: bool


class HostedKeyView(TypedDict):
    """An API key of the /v1 API, bound to one inference grant (never its secret)."""

    id: str
    grant_id: str
    model: str
    """ORG/MODEL@VERSION: the one version the key may query"""
    created_at: str
    last_used_at: str | None
    """when it last authenticated a request (to the minute); null: never"""
    revoked_at: str | None


class HostedKeyCreated(HostedKeyView):
    key: str
    """the secret, shown this once (Authorization: Bearer, the openai client's api_key)"""


class HostedKeyList(TypedDict):
    keys: list[HostedKeyView]


class UsageDay(TypedDict):
    """A grant's use of the hosted API on one UTC day (answered requests and their tokens)."""

    day: str
    """YYYY-MM-DD, UTC"""
    requests: int
    input_tokens: int
    output_tokens: int


class HostedGrantView(TypedDict):
    """A grant of hosted access (inference, internals) as its holder sees it, with today's
    use against its quotas."""

    id: str
    model: str
    """ORG/MODEL@VERSION, the name the /v1 API knows the version by"""
    kind: str
    state: str
    not_before: str
    expires_at: str
    revoked_at: str | None
    requests_per_minute: int | None
    tokens_per_day: int | None
    today: UsageDay


class GrantUsageView(TypedDict):
    """One grant's hosted use over the recent days, for the lab."""

    id: str
    model: str
    kind: str
    state: str
    researcher: str
    """the holder's verified email (else their user id)"""
    requests_per_minute: int | None
    tokens_per_day: int | None
    days: list[UsageDay]
    """newest first, one per day of the window (zeros where unused)"""
    total: UsageDay
    """the window's sum (`day`: its first day)"""


class OrgUsageView(TypedDict):
    org: str
    days: list[str]
    """the window's days, newest first"""
    grants: list[GrantUsageView]
