"""Progress and messages for a person, on stderr (stdout is kept for results and --json).

On a terminal one status line is redrawn at most every 0.25 s; otherwise a line is printed
every 15 s, so CI logs stay readable. Nothing here ever receives a token or a key.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from broker.domain.units import human_bytes

MIB = 1024 * 1024


class Progress:
    def __init__(
        self, stream: TextIO | None = None, *, quiet: bool = False, verb: str = "uploaded"
    ) -> None:
        self.stream = stream or sys.stderr
        self.verb = verb  # "uploaded", "fetched": what the progress line counts
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._interval = 0.25 if self.tty else 15.0
        self._lock = threading.Lock()
        self.total = 0
        self.sent = 0
        self.skipped = 0
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._line_open = False

    # --- messages ------------------------------------------------------------------------

    def info(self, message: str) -> None:
        self._print(message)

    def warn(self, message: str) -> None:
        self._print(f"warning: {message}")

    def _print(self, message: str) -> None:
        if self.quiet and not message.startswith("warning"):
            return
        with self._lock:
            if self._line_open:
                self.stream.write("\n")
                self._line_open = False
            self.stream.write(message + "\n")
            self.stream.flush()

    # --- byte counts ---------------------------------------------------------------------

    def begin(self, total: int, already: int = 0) -> None:
        """Start counting an upload of `total` bytes, `already` of them kept from a former run."""
        with self._lock:
            self.total, self.sent, self.skipped = total, already, already
            self._started = time.monotonic()

    def add_kept(self, n: int) -> None:
        """Bytes a former run already uploaded: counted as done, not in the rate."""
        with self._lock:
            self.sent += n
            self.skipped += n

    def add(self, n: int) -> None:
        with self._lock:
            self.sent += n
            now = time.monotonic()
            if now - self._last_draw < self._interval:
                return
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        if self.quiet:
            return
        elapsed = max(now - self._started, 1e-6)
        rate = (self.sent - self.skipped) / elapsed / 1e6
        pct = 100 * self.sent / self.total if self.total else 100.0
        text = (f"{self.verb} {human_bytes(self.sent)} of {human_bytes(self.total)} "
                f"({pct:.0f}%), {rate:.0f} MB/s")
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self._line_open = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def rate(self) -> float:
        """MB/s of bytes sent in this run."""
        elapsed = max(time.monotonic() - self._started, 1e-6)
        return (self.sent - self.skipped) / elapsed / 1e6

    def end(self) -> None:
        with self._lock:
            if self.quiet:
                return
            self._draw(time.monotonic())
            if self._line_open:
                self.stream.write("\n")
                self._line_open = False
            self.stream.flush()
