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
