"""rekey of a model version

A leaked version is re-encrypted under fresh file keys and a fresh escrow identity (`rekeys`, one
row per request; `rekey_files`, the files done, for a resumed job to skip); `deposits.generation`
names the set of objects that serves, `deposits.rekeying_at` stops key releases meanwhile.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 16:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deposits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('generation', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('rekeying_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('rekeys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('deposit_id', sa.String(length=32), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('requested_by', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('recipient', sa.Text(), nullable=False),
    sa.Column('wrapped_identity', sa.LargeBinary(), nullable=False),
    sa.Column('grants_revoked', sa.Integer(), nullable=False),
    sa.Column('old_objects_deleted', sa.Integer(), nullable=False),
    sa.Column('old_objects_locked', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('keep_lab_recipients', sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.ForeignKeyConstraint(['deposit_id'], ['deposits.id'], name=op.f('fk_rekeys_deposit_id_deposits')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rekeys'))
    )
    with op.batch_alter_table('rekeys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rekeys_deposit_id'), ['deposit_id'], unique=False)
    op.create_table('rekey_files',
    sa.Column('rekey_id', sa.Integer(), nullable=False),
    sa.Column('file_idx', sa.Integer(), nullable=False),
    sa.Column('header', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['rekey_id'], ['rekeys.id'], name=op.f('fk_rekey_files_rekey_id_rekeys')),
    sa.PrimaryKeyConstraint('rekey_id', 'file_idx', name=op.f('pk_rekey_files'))
    )


def downgrade() -> None:
    op.drop_table('rekey_files')
    with op.batch_alter_table('rekeys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rekeys_deposit_id'))
    op.drop_table('rekeys')
    with op.batch_alter_table('deposits', schema=None) as batch_op:
        batch_op.drop_column('rekeying_at')
        batch_op.drop_column('generation')
