from datetime import UTC, datetime, timedelta, timezone

from alembic import command
from sqlalchemy import inspect, select
from sqlalchemy.orm import sessionmaker

from broker.adapters.db.engine import alembic_config, make_engine
from broker.adapters.db.models import Organisation


def test_migrations_go_down_to_nothing_and_back_up(private_database_url):
    database_url = private_database_url
    engine = make_engine(database_url)
    config = alembic_config(database_url)
    command.downgrade(config, "base")
    assert "deposits" not in inspect(engine).get_table_names()
    command.upgrade(config, "head")
    assert {"deposits", "audit_events", "service_tokens"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_times_come_back_timezone_aware_in_utc(database_url):
    engine = make_engine(database_url)
    sessions = sessionmaker(engine)
    local_time = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    with sessions() as session:
        session.add(Organisation(name="acme-ai", created_at=local_time))
        session.commit()
    with sessions() as session:
        stored = session.scalar(select(Organisation.created_at))
    assert stored.tzinfo is not None
    assert stored == local_time
    assert stored.utcoffset() == UTC.utcoffset(None)
    engine.dispose()


def test_the_migrations_build_exactly_the_schema_the_models_describe(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from broker.adapters.db.models import Base

    engine = make_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_0008_moves_the_tree_nodes_onto_their_events_and_back(private_database_url):
    """A log written before 0008 (nodes in audit_nodes) gives the same proofs after it, and
    going down again restores audit_nodes exactly."""
    from sqlalchemy import text

    from broker.adapters.db.uow import UnitOfWork
    from broker.auditlog import merkle, proofs
    from broker.auditlog.leaf import leaf_hash
    from broker.services import audit

    engine = make_engine(private_database_url)
    config = alembic_config(private_database_url)
    command.downgrade(config, "0007")
    size, frontier, nodes = 37, [], {}
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events"))
        for seq in range(size):
            leaf = b'{"seq":%d}' % seq
            created, frontier = merkle.append(seq, frontier, leaf_hash(leaf))
            nodes.update(created)
            connection.execute(text(
                "INSERT INTO audit_events (seq, leaf, leaf_hash, action, created_at, actor) "
                "VALUES (:seq, :leaf, :hash, 'test.event', :now, 'operator')"
            ), {"seq": seq, "leaf": leaf, "hash": leaf_hash(leaf), "now": datetime.now(UTC)})
        connection.execute(text("DELETE FROM audit_nodes"))
        connection.execute(text("INSERT INTO audit_nodes (level, idx, hash) VALUES (:l, :i, :h)"),
                           [{"l": level, "i": idx, "h": value}
                            for (level, idx), value in nodes.items()])
        connection.execute(text("UPDATE audit_head SET size = :size, frontier = :frontier"),
                           {"size": size, "frontier": b"".join(frontier)})

    command.upgrade(config, "head")
    assert "audit_nodes" not in inspect(engine).get_table_names()
    root = merkle.root_from_frontier(frontier)
    with UnitOfWork(sessionmaker(engine)) as uow:
        read = audit.read_nodes(uow)
        assert read(list(nodes)) == nodes
        for index in (0, 17, 36):
            path = merkle.inclusion_proof(index, size, read)
            proofs.verify_inclusion(index, size, leaf_hash(b'{"seq":%d}' % index), path, root)

    command.downgrade(config, "0007")
    with engine.connect() as connection:
        back = connection.execute(text("SELECT level, idx, hash FROM audit_nodes")).all()
    assert {(level, idx): bytes(value) for level, idx, value in back} == nodes
    command.upgrade(config, "head")
    engine.dispose()


def test_0006_indexes_and_hashes_the_events_written_before_it(private_database_url):
    """0006 fills the index columns and the RFC 9162 tree of an older log with its own frozen
    copies of index_of and merkle.append: the same nodes and frontier as the live code."""
    import json

    from sqlalchemy import text

    from broker.auditlog import merkle
    from broker.auditlog.leaf import leaf_hash

    engine = make_engine(private_database_url)
    config = alembic_config(private_database_url)
    command.downgrade(config, "0005")
    events = [
        {"actor": {"kind": "user", "id": "7"}, "subject": {"model": "acme-ai/gpt", "user": 12}},
        {"actor": {"kind": "operator", "id": "cli"}, "subject": {"org": "acme-ai"}},
        {"actor": {"kind": "token", "id": "3"}, "subject": {}},
    ] * 4
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events"))
        for seq, event in enumerate(events):
            leaf = json.dumps({"seq": seq, **event}).encode()
            connection.execute(text(
                "INSERT INTO audit_events (seq, leaf, leaf_hash, action, created_at) "
                "VALUES (:seq, :leaf, :hash, 'test.event', :now)"
            ), {"seq": seq, "leaf": leaf, "hash": leaf_hash(leaf), "now": datetime.now(UTC)})
    command.upgrade(config, "0006")

    frontier, nodes = [], {}
    for seq, event in enumerate(events):
        leaf = json.dumps({"seq": seq, **event}).encode()
        created, frontier = merkle.append(seq, frontier, leaf_hash(leaf))
        nodes.update(created)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT level, idx, hash FROM audit_nodes")).all()
        head = connection.execute(text("SELECT frontier FROM audit_head")).scalar_one()
        index = connection.execute(
            text("SELECT org, model, user_id, actor FROM audit_events WHERE seq < 3 ORDER BY seq")
        ).all()
    assert {(level, idx): bytes(value) for level, idx, value in stored} == nodes
    assert bytes(head) == b"".join(frontier)
    assert [tuple(row) for row in index] == [
        ("acme-ai", "acme-ai/gpt", "12", "user:7"),
        ("acme-ai", None, None, "operator:cli"),
        (None, None, None, "token:3"),
    ]
    command.upgrade(config, "head")
    engine.dispose()


def test_no_migration_imports_the_broker():
    """A migration is frozen when written: importing live code (broker.*) would let it change
    when the app changes. The new-revision template must not bring such an import either."""
    import ast

    from broker.shipped import migrations_dir

    folder = migrations_dir()
    versions = sorted((folder / "versions").glob("*.py"))
    assert len(versions) >= 11
    offenders = []
    for path in versions:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["(relative import)"]
            else:
                continue
            offenders += [
                f"{path.name}:{node.lineno} imports {name}"
                for name in names
                if name == "broker" or name.startswith(("broker.", "(relative"))
            ]
    assert offenders == []
    assert "broker" not in (folder / "script.py.mako").read_text()
