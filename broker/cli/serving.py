"""A broker started as a process of its own (`escrow serve` in its own process group): wait
until it answers, and stop all of it. Used by `escrow demo`, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request


def broker_answers(url: str) -> bool:
    """True when the broker at `url` reports itself healthy."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        return False


def wait_until_serving(url: str, process: subprocess.Popen, timeout_s: float = 60) -> bool:
    """True once the broker answers; False if its process ended or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if broker_answers(url):
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def stop_group(process: subprocess.Popen, timeout_s: float = 15) -> None:
    """Stop the process group `process` leads (gunicorn, its workers, the job worker):
    SIGINT (gunicorn's quick shutdown), then SIGKILL for whatever is left."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
