"""jobs hold a lease renewed by a heartbeat, back off between attempts, and end

A job claimed by a worker that died used to stay `running` for 30 minutes; now its lease
(`lease_until`) lapses within seconds and another worker takes it. `run_after` spaces the
attempts out; `finished_at` marks the end (done or failed). `workers` lists the live workers
by their last heartbeat; `deposits.failure_hint` says what to do about a failed deposit.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 10:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('run_after', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True))
    # A job left running under the old rule belonged to a worker of the old code: its lease
    # has lapsed, so the next worker takes it at once.
    op.execute("UPDATE jobs SET lease_until = locked_at WHERE state = 'running'")
    with op.batch_alter_table('deposits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failure_hint', sa.Text(), nullable=True))
    op.create_table(
        'workers',
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_workers')),
    )


def downgrade() -> None:
    op.drop_table('workers')
    with op.batch_alter_table('deposits', schema=None) as batch_op:
        batch_op.drop_column('failure_hint')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('finished_at')
        batch_op.drop_column('run_after')
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('lease_until')
