"""audit log: each event holds the Merkle subtrees it completes; audit_nodes goes

Every append wrote an audit_nodes row for its own leaf (a copy of audit_events.leaf_hash) and
one per subtree it completed: a third statement and a second table's index on the hottest write.
A node's hash now lives on the event of the subtree's last leaf.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 19:10:00.000000
"""

import itertools

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subtrees', sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    bind.execute(sa.text("UPDATE audit_events SET subtrees = :empty"), {"empty": b""})
    _copy_nodes_to_events(bind)
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.alter_column('subtrees', existing_type=sa.LargeBinary(), nullable=False)
    op.drop_table('audit_nodes')


def _copy_nodes_to_events(bind: sa.Connection) -> None:
    """Node (level, idx), level >= 1, joins the `subtrees` of leaf ((idx + 1) << level) - 1,
    levels in ascending order. Streamed, in batches: logs are long."""
    rows = bind.execute(sa.text(
        "SELECT ((idx + 1) << level) - 1 AS seq, hash FROM audit_nodes WHERE level > 0 "
        "ORDER BY seq, level"
    ).execution_options(stream_results=True))
    update = sa.text("UPDATE audit_events SET subtrees = :subtrees WHERE seq = :seq")
    batch = []
    for seq, nodes in itertools.groupby(rows, key=lambda row: row[0]):
        batch.append({"seq": seq, "subtrees": b"".join(bytes(row[1]) for row in nodes)})
        if len(batch) >= BATCH:
            bind.execute(update, batch)
            batch = []
    if batch:
        bind.execute(update, batch)


def downgrade() -> None:
    op.create_table('audit_nodes',
    sa.Column('level', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('idx', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('level', 'idx', name=op.f('pk_audit_nodes'))
    )
    bind = op.get_bind()
    insert = sa.text("INSERT INTO audit_nodes (level, idx, hash) VALUES (:level, :idx, :hash)")
    batch = []
    for seq, digest, subtrees in bind.execute(sa.text(
        "SELECT seq, leaf_hash, subtrees FROM audit_events ORDER BY seq"
    ).execution_options(stream_results=True)):
        hashes = [bytes(digest)]
        hashes += [bytes(subtrees[i : i + 32]) for i in range(0, len(subtrees), 32)]
        batch += [
            {"level": level, "idx": ((seq + 1) >> level) - 1, "hash": value}
            for level, value in enumerate(hashes)
        ]
        if len(batch) >= BATCH:
            bind.execute(insert, batch)
            batch = []
    if batch:
        bind.execute(insert, batch)
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_column('subtrees')
