"""The byte-rate budget: pauses computed on a clock that moves only when the budget sleeps."""

from __future__ import annotations

import io

import pytest
from durability_support import Clock

from broker.domain.throttle import Throttle, next_allowed

MB = 1_000_000


def test_reads_faster_than_the_rate_are_paced_to_it():
    clock = Clock()
    throttle = Throttle(MB, clock, clock.sleep, burst_s=0)
    for _ in range(10):
        throttle.consume(MB)
    assert clock.sleeps == pytest.approx([1.0] * 10)
    assert throttle.bytes == 10 * MB and throttle.slept_s == pytest.approx(10.0)


def test_a_burst_allowance_is_spent_first():
    clock = Clock()
    throttle = Throttle(MB, clock, clock.sleep, burst_s=1.0)
    for _ in range(10):
        throttle.consume(MB)
    assert throttle.slept_s == pytest.approx(9.0)


def test_time_spent_elsewhere_earns_at_most_the_burst():
    clock = Clock()
    throttle = Throttle(MB, clock, clock.sleep, burst_s=1.0)
    throttle.consume(MB)
    clock.now += 3600  # an hour of HEAD requests, not reads
    for _ in range(5):
        throttle.consume(MB)
    assert throttle.slept_s == pytest.approx(4.0)  # 5 s of reading, 1 s of it saved up


def test_without_a_budget_nothing_pauses_but_bytes_are_counted():
    clock = Clock()
    throttle = Throttle(0, clock, clock.sleep)
    throttle.consume(10 * MB)
    assert clock.sleeps == [] and throttle.bytes == 10 * MB


def test_the_virtual_clock_never_runs_behind_the_burst_window():
    assert next_allowed(float("-inf"), 100.0, MB, MB, 1.0) == pytest.approx(100.0)
    assert next_allowed(105.0, 100.0, MB, MB, 1.0) == pytest.approx(106.0)


def test_a_throttled_reader_charges_what_it_reads():
    clock = Clock()
    throttle = Throttle(1000, clock, clock.sleep, burst_s=0)
    reader = throttle.reader(io.BytesIO(b"x" * 3000))
    buffer = bytearray(1000)
    assert reader.readinto(buffer) == 1000
    assert reader.read(5000) == b"x" * 2000
    assert reader.read(10) == b""
    assert throttle.bytes == 3000 and throttle.slept_s == pytest.approx(3.0)
