"""Sixteen writers appending at once on PostgreSQL: no duplicate or skipped sequence number,
and the tree they grew is the tree of the leaves they wrote."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from broker.adapters.db.models import AuditEvent
from broker.auditlog import merkle
from broker.domain.principals import OPERATOR
from broker.services import audit

WRITERS, EACH = 16, 8


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # real row locks
def test_sixteen_concurrent_writers_leave_a_gapless_consistent_log(escrow):
    with escrow.uow() as uow:
        start, _ = audit.head(uow)
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            barrier.wait()
            for number in range(EACH):
                with escrow.uow() as uow:
                    uow.audit("test.concurrent", OPERATOR, {"org": "acme-ai"},
                              {"writer": writer, "n": number})
                    uow.commit()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with escrow.uow() as uow:
        rows = uow.session.execute(
            select(AuditEvent.seq, AuditEvent.leaf_hash).order_by(AuditEvent.seq)).all()
        size, root = audit.head(uow)
    assert [seq for seq, _ in rows] == list(range(start + WRITERS * EACH))
    assert size == len(rows)
    assert root == merkle.root_of_leaves([bytes(h) for _, h in rows])
    with escrow.uow() as uow:
        assert audit.self_check(uow).size == size
