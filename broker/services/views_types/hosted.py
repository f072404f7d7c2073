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
