"""The one clock: timezone-aware UTC, what every stored time is."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
