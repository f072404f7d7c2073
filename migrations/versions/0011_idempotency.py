"""changes made under an Idempotency-Key, with their encrypted answers

A retry of a state-changing API call with the same Idempotency-Key gets the first call's answer
instead of making the change again; the record is written in the change's own transaction.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 11:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'idempotency_records',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('request_sha256', sa.String(length=64), nullable=False),
        sa.Column('answer', sa.LargeBinary(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_records')),
    )
    with op.batch_alter_table('idempotency_records', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_idempotency_records_created_at'), ['created_at'], unique=False
        )


def downgrade() -> None:
    op.drop_table('idempotency_records')
