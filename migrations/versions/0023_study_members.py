"""study members: a study's team besides its owner

`study_members` (study, user): people the study's owner added to its team; they list and fetch
its captures as the owner does.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 20:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('study_members',
    sa.Column('study_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('added_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'],
                            name=op.f('fk_study_members_study_id_studies')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                            name=op.f('fk_study_members_user_id_users')),
    sa.PrimaryKeyConstraint('study_id', 'user_id', name=op.f('pk_study_members'))
    )
    with op.batch_alter_table('study_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_members_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('study_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_members_user_id'))
    op.drop_table('study_members')
