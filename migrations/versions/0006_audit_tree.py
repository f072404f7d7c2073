"""audit log: Merkle tree nodes, frontier, checkpoints, and event index columns

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 14:10:00.000000
"""

import hashlib
import json

from alembic import op
import sqlalchemy as sa


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
        index = _index_of(event["actor"], {k: v for k, v in subject.items() if v is not None})
        bind.execute(
            sa.text(
                "UPDATE audit_events SET org = :org, model = :model, user_id = :user_id, "
                "actor = :actor WHERE seq = :seq"
            ),
            {**index, "seq": seq},
        )
        nodes, frontier = _append(size, frontier, bytes(leaf_hash))
        bind.execute(
            sa.text("INSERT INTO audit_nodes (level, idx, hash) VALUES (:level, :idx, :hash)"),
            [{"level": level, "idx": idx, "hash": digest} for (level, idx), digest in nodes],
        )
        size = seq + 1
    bind.execute(
        sa.text("UPDATE audit_head SET frontier = :frontier WHERE id = 1"),
        {"frontier": b"".join(frontier)},
    )


# Frozen copies of the live code this revision was written with (broker.auditlog.index.index_of
# and broker.auditlog.merkle.append of 65b802b), so that this migration never changes when the
# app does.


def _index_of(actor: dict, subject: dict) -> dict:
    """Organisation, model (`org/model`), subject user and actor (`kind:id`) of one event."""
    model = subject.get("model")
    org = subject.get("org") or (model.split("/", 1)[0] if isinstance(model, str) else None)
    user = subject.get("user")
    return {
        "org": org if isinstance(org, str) else None,
        "model": model if isinstance(model, str) else None,
        "user_id": str(user) if user is not None else None,
        "actor": f"{actor.get('kind')}:{actor.get('id')}",
    }


def _node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 section 2.1.1: HASH(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _append(size: int, frontier: list, leaf_hash: bytes) -> tuple[list, list]:
    """Add leaf number `size` to the RFC 9162 tree whose frontier (the hashes of the maximal
    complete subtrees, largest first) is `frontier`: the new complete nodes ((level, index),
    hash), bottom up, and the new frontier."""
    if len(frontier) != size.bit_count() or len(leaf_hash) != 32:
        raise ValueError(f"audit log tree at size {size}: frontier or leaf hash malformed")
    new_frontier = list(frontier)
    level, index, value = 0, size, leaf_hash
    created = [((level, index), value)]
    while index & 1:  # a right child completes its parent
        value = _node_hash(new_frontier.pop(), value)
        level, index = level + 1, index >> 1
        created.append(((level, index), value))
    new_frontier.append(value)
    return created, new_frontier


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
