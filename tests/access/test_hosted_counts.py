"""Hosted access's counters shared by broker processes (broker.services.hosted_usage), on SQLite
and PostgreSQL: concurrent requests never pass a quota together nor lose a count, and a day's
usage is reported once however many workers try."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select

from broker.adapters.db.models import AuditEvent, HostedUsage
from broker.domain.clock import now
from broker.services import hosted_usage

THREADS = 8


@pytest.fixture
def granted(sealed, researcher, reviewer) -> str:
    request_id = researcher.ask().json["request"]["id"]
    decided = reviewer.post(f"/api/v1/requests/{request_id}/approve")
    assert decided.status_code == 200, decided.json
    return decided.json["grant"]["id"]


def _at_once(work, n: int = THREADS) -> list:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: work(), range(n)))


def test_concurrent_requests_pass_a_minute_quota_exactly_and_lose_no_count(escrow, granted):
    moment = now().replace(second=5)  # one minute for every thread

    def admit() -> bool:
        try:
            with escrow.uow() as uow:
                hosted_usage.admit(uow, granted, 3, None, moment)
            return True
        except hosted_usage.QuotaExceeded as refused:
            assert "3 requests per minute" in refused.message and refused.retry_after == 55
            return False

    assert sorted(_at_once(admit)) == [False] * (THREADS - 3) + [True] * 3

    def record() -> None:
        with escrow.uow() as uow:
            hosted_usage.record(uow, granted, {"prompt_tokens": 10, "completion_tokens": 5},
                                moment)

    _at_once(record)
    with escrow.uow() as uow:
        day = uow.session.scalars(select(HostedUsage).where(HostedUsage.period == "day")).one()
        assert (day.requests, day.input_tokens, day.output_tokens) == (THREADS, 80, 40)
    with escrow.uow() as uow:  # the day's tokens reached: refused until midnight
        with pytest.raises(hosted_usage.QuotaExceeded, match="120 tokens per day"):
            hosted_usage.admit(uow, granted, None, 120, moment)
        hosted_usage.admit(uow, granted, None, 121, moment)

    later = moment + timedelta(days=1, hours=1)
    assert sum(_at_once(lambda: hosted_usage.report_due(escrow, later), 4)) == 1
    with escrow.uow() as uow:
        actions = uow.session.scalars(select(AuditEvent.action)).all()
    assert actions.count("hosted.usage") == 1
