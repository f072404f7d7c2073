"""grant close-outs and version quarantine

A researcher attests that an ended grant's weights were deleted (`grant_closeouts`, one row per
grant, the typed name kept off the audit log); an operator quarantines a version (`deposits.
quarantined_at`, `quarantine_reason`): no key release and no new request while it is set.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 14:20:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('grant_closeouts',
    sa.Column('grant_id', sa.String(length=32), nullable=False),
    sa.Column('typed_name', sa.Text(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('ssh_signature', sa.Text(), nullable=True),
    sa.Column('ssh_key_id', sa.String(length=32), nullable=True),
    sa.Column('attested_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'], name=op.f('fk_grant_closeouts_grant_id_grants')),
    sa.PrimaryKeyConstraint('grant_id', name=op.f('pk_grant_closeouts'))
    )
    with op.batch_alter_table('deposits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quarantined_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('quarantine_reason', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deposits', schema=None) as batch_op:
        batch_op.drop_column('quarantine_reason')
        batch_op.drop_column('quarantined_at')
    op.drop_table('grant_closeouts')
