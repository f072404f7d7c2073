"""Single-use secrets under racing requests: exactly one winner, on each kind of database.

Eight threads, each with its own connection, present one login link at the same instant."""

from __future__ import annotations

import threading

from sqlalchemy import select
from web.seed import make_login_link

from broker.adapters.db.models import AuditEvent, LoginSession
from broker.errors import EscrowError
from broker.services import sessions

RACERS = 8


def race(work) -> list[object]:
    """Run `work()` on RACERS threads released together; each one's result or error."""
    start = threading.Barrier(RACERS)
    results: list[object] = [None] * RACERS

    def run(slot: int) -> None:
        start.wait()
        try:
            results[slot] = work()
        except EscrowError as error:
            results[slot] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_a_login_link_presented_eight_times_at_once_logs_in_once(escrow):
    secret = make_login_link(escrow)

    def redeem() -> str:
        with escrow.uow() as uow:
            login = sessions.redeem_login_link(uow, secret)
            uow.commit()
            return login.id

    results = race(redeem)
    winners = [r for r in results if isinstance(r, str)]
    losers = [r for r in results if isinstance(r, EscrowError)]
    assert len(winners) == 1, results
    assert len(losers) == RACERS - 1
    assert all("invalid, used or expired" in loser.message for loser in losers)
    with escrow.uow() as uow:
        assert len(uow.session.scalars(select(LoginSession)).all()) == 1
        logins = uow.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "user.login")).all()
        assert len(logins) == 1
