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
    revoked_at: str | None


class HostedKeyCreated(HostedKeyView):
    key: str
    """the secret, shown this once (Authorization: Bearer, the openai client's api_key)"""


class HostedKeyList(TypedDict):
    keys: list[HostedKeyView]
