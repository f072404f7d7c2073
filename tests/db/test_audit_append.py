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
