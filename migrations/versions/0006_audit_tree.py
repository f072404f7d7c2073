"""audit log: Merkle tree nodes, frontier, checkpoints, and event index columns

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 14:10:00.000000
"""

import json

from alembic import op
import sqlalchemy as sa

from broker.auditlog import merkle
from broker.auditlog.index import index_of


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_checkpoints',
    sa.Column('size', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('root', sa.LargeBinary(length=32), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('size', name=op.f('pk_audit_checkpoints'))
    )
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_checkpoints_created_at'), ['created_at'], unique=False)

    op.create_table('audit_nodes',
    sa.Column('level', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('idx', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('level', 'idx', name=op.f('pk_audit_nodes'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('org', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('model', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('user_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('actor', sa.String(length=80), nullable=True))
    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.add_column(sa.Column('frontier', sa.LargeBinary(), nullable=True))

    _backfill(op.get_bind())

    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.alter_column('actor', existing_type=sa.String(length=80), nullable=False)
        batch_op.create_index(batch_op.f('ix_audit_events_actor'), ['actor'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_model'), ['model'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_org'), ['org'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_user_id'), ['user_id'], unique=False)
    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.alter_column('frontier', existing_type=sa.LargeBinary(), nullable=False)


def _backfill(bind: sa.Connection) -> None:
    """Index and hash into the tree the events written before this revision."""
    models = dict(
        bind.execute(
            sa.text(
                "SELECT d.id, o.name || '/' || m.name FROM deposits d "
                "JOIN models m ON m.id = d.model_id JOIN organisations o ON o.id = m.org_id"
            )
        ).all()
    )
    size, frontier = 0, []
    rows = bind.execute(sa.text("SELECT seq, leaf, leaf_hash FROM audit_events ORDER BY seq"))
    for seq, leaf, leaf_hash in rows.all():
        event = json.loads(bytes(leaf))
        subject = dict(event.get("subject") or {})
        subject.setdefault("model", models.get(subject.get("deposit")))
        index = index_of(event["actor"], {k: v for k, v in subject.items() if v is not None})
        bind.execute(
            sa.text(
                "UPDATE audit_events SET org = :org, model = :model, user_id = :user_id, "
                "actor = :actor WHERE seq = :seq"
            ),
            {**index.__dict__, "seq": seq},
        )
        nodes, frontier = merkle.append(size, frontier, bytes(leaf_hash))
        bind.execute(
            sa.text("INSERT INTO audit_nodes (level, idx, hash) VALUES (:level, :idx, :hash)"),
            [{"level": level, "idx": idx, "hash": digest} for (level, idx), digest in nodes],
        )
        size = seq + 1
    bind.execute(
        sa.text("UPDATE audit_head SET frontier = :frontier WHERE id = 1"),
        {"frontier": b"".join(frontier)},
    )


def downgrade() -> None:
    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.drop_column('frontier')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_user_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_org'))
        batch_op.drop_index(batch_op.f('ix_audit_events_model'))
        batch_op.drop_index(batch_op.f('ix_audit_events_created_at'))
        batch_op.drop_index(batch_op.f('ix_audit_events_actor'))
        batch_op.drop_column('actor')
        batch_op.drop_column('user_id')
        batch_op.drop_column('model')
        batch_op.drop_column('org')
    op.drop_table('audit_nodes')
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_checkpoints_created_at'))
    op.drop_table('audit_checkpoints')
