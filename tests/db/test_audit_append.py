import hashlib

import pytest
import rfc8785
from sqlalchemy import select, text
from sqlalchemy.orm import sessionmaker

from broker.adapters.db.engine import make_engine
from broker.adapters.db.models import AuditEvent, Organisation
from broker.adapters.db.uow import UnitOfWork
from broker.domain.principals import OPERATOR
from broker.errors import Unavailable


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def test_events_are_stored_as_the_exact_canonical_bytes_that_were_hashed(sessions):
    with UnitOfWork(sessions) as uow:
        uow.audit("org.created", OPERATOR, {"org": "b"}, {"z": 1, "a": [2, "x"]})
        uow.audit("org.created", OPERATOR, {"org": "c"})
        uow.commit()
    with sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    assert [e.seq for e in events] == [0, 1]
    first = events[0]
    assert first.leaf_hash == hashlib.sha256(b"\x00" + first.leaf).digest()
    decoded = rfc8785.dumps(__import__("json").loads(first.leaf))
    assert decoded == first.leaf  # canonical: re-encoding gives the same bytes
    assert first.leaf.index(b'"a"') < first.leaf.index(b'"z"')


def test_a_change_without_commit_leaves_no_event_and_no_change(sessions):
    with UnitOfWork(sessions) as uow:
        uow.session.add(Organisation(name="acme-ai"))
        uow.audit("org.created", OPERATOR, {"org": "acme-ai"})
    with sessions() as session:
        assert session.scalar(select(Organisation)) is None
        assert session.scalar(select(AuditEvent)) is None


def test_a_failing_append_aborts_the_change(private_database_url):
    engine = make_engine(private_database_url)
    sessions = sessionmaker(engine)
    with sessions() as session:
        session.execute(text("DROP TABLE audit_events"))
        session.commit()
    with pytest.raises(Unavailable, match="audit log"), UnitOfWork(sessions) as uow:
        uow.session.add(Organisation(name="acme-ai"))
        uow.audit("org.created", OPERATOR, {"org": "acme-ai"})
        uow.commit()
    with sessions() as session:
        assert session.scalar(select(Organisation)) is None
    engine.dispose()


def _head_and_leaves(sessions) -> tuple[int, bytes, list[int], list[bytes]]:
    from broker.adapters.db.models import AuditHead

    with sessions() as session:
        head = session.get(AuditHead, 1)
        rows = session.execute(
            select(AuditEvent.seq, AuditEvent.leaf_hash).order_by(AuditEvent.seq)
        ).all()
        seqs, digests = zip(*rows, strict=True) if rows else ((), ())
        return head.size, head.frontier, list(seqs), list(digests)


def _org_locking_the_head(sessions, events: int):
    """Organisation acme-ai after `events` appends, and the statement that locks its row and
    the audit head (locked_with_audit_head)."""
    from broker.adapters.db.uow import with_audit_head

    with UnitOfWork(sessions) as uow:
        for _ in range(events):
            uow.audit("org.created", OPERATOR, {"org": "acme-ai"})
        uow.session.add(Organisation(name="acme-ai"))
        uow.commit()
    return with_audit_head(
        select(Organisation.id).where(Organisation.name == "acme-ai"), Organisation
    )


def test_an_append_to_a_head_locked_with_a_row_continues_the_tree(sessions):
    """locked_with_audit_head: the row and the head in one statement; the next appends use
    that head (the first) and lock it again (the second), and the tree stays whole."""
    from broker.adapters.db.uow import split_hashes
    from broker.auditlog import merkle

    locking = _org_locking_the_head(sessions, events=1)
    with UnitOfWork(sessions) as uow:
        assert uow.locked_with_audit_head(locking, {}).audit_size == 1
        uow.audit("org.renamed", OPERATOR, {"org": "acme-ai"})
        uow.audit("org.renamed", OPERATOR, {"org": "acme-ai"})
        uow.commit()
    size, frontier, seqs, digests = _head_and_leaves(sessions)
    assert (size, seqs) == (3, [0, 1, 2])
    assert merkle.root_from_frontier(split_hashes(frontier)) == merkle.root_of_leaves(digests)


def test_a_head_locked_in_an_earlier_transaction_is_locked_anew(sessions):
    """A head read with a row lock and not appended to before that transaction ended is stale
    once another append commits: the next append must not write after it."""
    locking = _org_locking_the_head(sessions, events=0)
    with UnitOfWork(sessions) as first:
        assert first.locked_with_audit_head(locking, {}).audit_size == 0
        first.commit()  # nothing appended: the head's lock ends here
        with UnitOfWork(sessions) as other:
            other.audit("org.created", OPERATOR, {"org": "b"})
            other.commit()
        first.audit("org.created", OPERATOR, {"org": "c"})  # seq 1, not a second seq 0
        first.commit()
    size, _, seqs, _ = _head_and_leaves(sessions)
    assert (size, seqs) == (2, [0, 1])
