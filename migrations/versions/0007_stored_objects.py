"""fixity: store checksums of each copy's objects

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 14:32:20.544991
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stored_objects',
    sa.Column('copy', sa.String(length=16), nullable=False),
    sa.Column('key', sa.String(length=1024), nullable=False),
    sa.Column('deposit_id', sa.String(length=32), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('etag', sa.String(length=200), nullable=False),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['deposit_id'], ['deposits.id'], name=op.f('fk_stored_objects_deposit_id_deposits')),
    sa.PrimaryKeyConstraint('copy', 'key', name=op.f('pk_stored_objects'))
    )
    with op.batch_alter_table('stored_objects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stored_objects_deposit_id'), ['deposit_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('stored_objects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stored_objects_deposit_id'))

    op.drop_table('stored_objects')
