"""hosted access: the kind of a request and a grant, and the model workers

`access_requests.kind` and `grants.kind` (weights | inference | hosting; 'weights' for every
existing row, the only kind there was), and `model_workers`: a worker process serving one
version, its URL, its last heartbeat (the secret the broker sends it is derived, not kept).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 16:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('access_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False,
                                      server_default='weights'))
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False,
                                      server_default='weights'))
    op.create_table('model_workers',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('deposit_id', sa.String(length=32), nullable=False),
    sa.Column('grant_id', sa.String(length=32), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['deposit_id'], ['deposits.id'],
                            name=op.f('fk_model_workers_deposit_id_deposits')),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'],
                            name=op.f('fk_model_workers_grant_id_grants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_workers'))
    )
    with op.batch_alter_table('model_workers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_workers_deposit_id'), ['deposit_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('model_workers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_workers_deposit_id'))
    op.drop_table('model_workers')
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.drop_column('kind')
    with op.batch_alter_table('access_requests', schema=None) as batch_op:
        batch_op.drop_column('kind')
