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


@pytest.mark.parametrize(
    ("subject", "details"),
    [
        ({}, {}),
        ({"org": "acme-ai", "user": 12}, {"z": 1, "a": [2, "x"], "seq": 5}),
        ({"model": "acme-ai/ünïcode", "déjà": "vu"}, {"ratio": 0.1, "big": 2**53 - 1, "e": 1e21}),
        ({"seq": 9, "subject": {"time": "x"}}, {"quote": '"seq":7,'}),
    ],
)
def test_leaf_parts_complete_to_the_canonical_leaf(subject, details):
    """What PostgreSQL's audit_append completes (number, time) gives canonical_json's bytes,
    floats, big integers and non-ASCII keys (rfc8785's own writer) included."""
    from broker.adapters.db.uow import leaf_parts
    from broker.auditlog.leaf import canonical_json

    actor = {"kind": "user", "id": "3"}
    before, between = leaf_parts("org.created", actor, subject, details)
    for seq in (0, 7, 123456789):
        time = "2026-12-09T10:11:12.000123Z"
        whole = {"seq": seq, "time": time, "action": "org.created", "actor": actor,
                 "subject": subject, "details": details}
        assert before + str(seq).encode() + between + time.encode() + b'"}' == \
            canonical_json(whole)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # audit_append
def test_appends_made_by_the_database_are_the_leaves_and_nodes_python_makes(sessions):
    """audit_append (migration 0012): canonical leaves numbered in order, their time that of
    created_at, leaf hashes and every stored subtree hash equal to Python's RFC 9162 tree."""
    import json
    from datetime import datetime

    from broker.adapters.db.uow import _grow, split_hashes
    from broker.auditlog import merkle
    from broker.auditlog.leaf import canonical_json, leaf_hash

    for batch in (1, 3, 1, 5, 2, 8, 1, 16):  # several events in one transaction, too
        with UnitOfWork(sessions) as uow:
            for n in range(batch):
                uow.audit("org.created", OPERATOR, {"org": f"o{n}"}, {"n": n, "é": [1.5]})
            uow.commit()
    size, frontier, seqs, digests = _head_and_leaves(sessions)
    assert seqs == list(range(37)) and size == 37
    with sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    expected_subtrees, expected_frontier = _grow(0, b"", digests)
    assert frontier == expected_frontier
    assert merkle.root_from_frontier(split_hashes(frontier)) == merkle.root_of_leaves(digests)
    times = []
    for event, subtrees in zip(events, expected_subtrees, strict=True):
        value = json.loads(event.leaf)
        assert canonical_json(value) == event.leaf
        assert value["seq"] == event.seq and value["action"] == event.action
        assert value["subject"]["org"] == event.org and event.actor == "operator:console"
        assert event.leaf_hash == leaf_hash(event.leaf)
        assert event.subtrees == subtrees
        stamp = datetime.strptime(value["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert stamp == event.created_at.replace(tzinfo=None)
        times.append(stamp)
    assert times == sorted(times)  # stamped under the head's lock: in the order of numbers


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_events_pending_at_commit_are_not_appended_without_it(sessions):
    """On PostgreSQL an event goes out with the COMMIT: a unit of work left without commit
    (or whose commit failed) appends nothing, and the next one starts clean."""
    with UnitOfWork(sessions) as uow:
        uow.audit("org.created", OPERATOR, {"org": "a"})
    with UnitOfWork(sessions) as uow:
        uow.audit("org.created", OPERATOR, {"org": "b"})
        uow.commit()
    size, _, seqs, _ = _head_and_leaves(sessions)
    assert (size, seqs) == (1, [0])
    with sessions() as session:
        assert b'"org":"b"' in session.scalar(select(AuditEvent.leaf))


HOSTILE = ["it's", "a\\b", "%s %(x)s", "'); DROP TABLE audit_events; --", "$fn$", "ü\u2028\t",
           "E'\\x00'"]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_values_bound_into_the_append_message_arrive_byte_for_byte(sessions):
    """The appends and the COMMIT go as one message whose values psycopg quotes on the client:
    quotes, backslashes, placeholders, dollar quotes and SQL in every bound value (the leaf's
    bytes and the index columns) arrive exactly, and nothing else runs."""
    import json

    from broker.auditlog.leaf import canonical_json
    from broker.domain.principals import Principal

    actor = Principal(kind="user", id=HOSTILE[3])
    with UnitOfWork(sessions) as uow:
        for value in HOSTILE:
            uow.audit("org.created", actor, {"org": value, "model": f"{value}/m"},
                      {"why": value, value: [value]})
        uow.commit()
    with sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    assert [e.org for e in events] == HOSTILE
    for event, value in zip(events, HOSTILE, strict=True):
        leaf = json.loads(event.leaf)
        assert canonical_json(leaf) == event.leaf
        assert leaf["details"] == {"why": value, value: [value]}
        assert event.model == f"{value}/m" and event.actor == f"user:{HOSTILE[3]}"
    assert _head_and_leaves(sessions)[0] == len(HOSTILE)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_failing_append_in_the_middle_commits_nothing(sessions):
    """Three events in one message: the second fails (the index column is too long for its
    column), so neither the change, nor the first event, nor the third is committed, and the
    head is where it was."""
    with pytest.raises(Unavailable, match="audit log"), UnitOfWork(sessions) as uow:
        uow.session.add(Organisation(name="acme-ai"))
        uow.audit("org.created", OPERATOR, {"org": "acme-ai"})
        uow.audit("org.created", OPERATOR, {"org": "x" * 100_000})
        uow.audit("org.created", OPERATOR, {"org": "acme-ai"})
        uow.commit()
    with sessions() as session:
        assert session.scalar(select(Organisation)) is None
    assert _head_and_leaves(sessions)[:3] == (0, b"", [])
