"""A byte-rate budget for background reads (fixity): pause so that reading never runs faster
than allowed on average, with at most `burst_s` seconds of unused budget saved up.

The rule is a virtual clock (GCRA): each byte "costs" 1/rate seconds; `allowed_at` is when the
bytes read so far are paid for. Reading may run ahead of the wall clock by nothing: if
`allowed_at` is in the future, wait until then. Time spent not reading (head requests, a
database commit) earns credit, capped at `burst_s`, so a pause never lets a later burst run
faster than the budget for longer than that.

Pure: the clock and the sleep are given, so tests assert on the pauses, not on wall time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO, cast

DEFAULT_BURST_S = 1.0


def next_allowed(allowed_at: float, now: float, size: int, rate: int, burst_s: float) -> float:
    """When `size` more bytes are paid for, given the budget was paid up to `allowed_at`."""
    return max(allowed_at, now - burst_s) + size / rate


class Throttle:
    """Counts bytes read and sleeps as the budget requires (`max_bytes_per_s` 0: no budget)."""

    def __init__(
        self,
        max_bytes_per_s: int,
        clock: Callable[[], float],
        sleep: Callable[[float], Any],
        burst_s: float = DEFAULT_BURST_S,
    ) -> None:
        self.max_bytes_per_s = max_bytes_per_s
        self.bytes = 0
        self.slept_s = 0.0
        self.pauses: list[float] = []
        self._clock, self._sleep, self._burst_s = clock, sleep, burst_s
        self._allowed_at = float("-inf")

    def consume(self, size: int) -> None:
        """Account for `size` bytes just read; sleep first if they were read too fast."""
        self.bytes += size
        if self.max_bytes_per_s <= 0 or size <= 0:
            return
        now = self._clock()
        self._allowed_at = next_allowed(
            self._allowed_at, now, size, self.max_bytes_per_s, self._burst_s
        )
        pause = self._allowed_at - now
        if pause > 0:
            self.pauses.append(pause)
            self.slept_s += pause
            self._sleep(pause)

    def reader(self, source: BinaryIO) -> BinaryIO:
        # Duck-typed: its read and readinto are all that the stream's consumers call.
        return cast(BinaryIO, ThrottledReader(source, self))


class ThrottledReader:
    """A binary stream whose reads are charged to a Throttle (memory: the caller's buffer)."""

    def __init__(self, source: Any, throttle: Throttle) -> None:
        self._source = source
        self._throttle = throttle

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._source.read(size)
        self._throttle.consume(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._source.readinto(buffer) or 0
        self._throttle.consume(n)
        return n
