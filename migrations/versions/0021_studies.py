"""studies of live use, with consent

`studies` (a researcher's study of a model or one version: recipients as a JSON list, state
proposed/approved/rejected/closed), `study_consents` (a person's consent until withdrawn),
`study_captures` (the index of captured exchanges: age files in the store) and
`study_capture_reports` (a study's day of captures, once counted on the audit log).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 19:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('studies',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('deposit_id', sa.String(length=32), nullable=True),
    sa.Column('recipients', sa.Text(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decided_by', sa.String(length=64), nullable=True),
    sa.Column('decision_note', sa.Text(), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_studies_model_id_models')),
    sa.ForeignKeyConstraint(['deposit_id'], ['deposits.id'],
                            name=op.f('fk_studies_deposit_id_deposits')),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_studies_owner_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_studies')),
    sa.UniqueConstraint('name', name=op.f('uq_studies_name'))
    )
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_studies_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_owner_id'), ['owner_id'], unique=False)
    op.create_table('study_consents',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('study_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('given_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'],
                            name=op.f('fk_study_consents_study_id_studies')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                            name=op.f('fk_study_consents_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_study_consents'))
    )
    with op.batch_alter_table('study_consents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_consents_study_id'), ['study_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_study_consents_user_id'), ['user_id'],
                              unique=False)
    op.create_table('study_captures',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('study_id', sa.String(length=32), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('object_key', sa.Text(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'],
                            name=op.f('fk_study_captures_study_id_studies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_study_captures'))
    )
    with op.batch_alter_table('study_captures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_captures_study_id'), ['study_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_study_captures_day'), ['day'], unique=False)
    op.create_table('study_capture_reports',
    sa.Column('study_id', sa.String(length=32), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('captures', sa.Integer(), nullable=False),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'],
                            name=op.f('fk_study_capture_reports_study_id_studies')),
    sa.PrimaryKeyConstraint('study_id', 'day', name=op.f('pk_study_capture_reports'))
    )


def downgrade() -> None:
    op.drop_table('study_capture_reports')
    with op.batch_alter_table('study_captures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_captures_day'))
        batch_op.drop_index(batch_op.f('ix_study_captures_study_id'))
    op.drop_table('study_captures')
    with op.batch_alter_table('study_consents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_consents_user_id'))
        batch_op.drop_index(batch_op.f('ix_study_consents_study_id'))
    op.drop_table('study_consents')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_studies_owner_id'))
        batch_op.drop_index(batch_op.f('ix_studies_model_id'))
    op.drop_table('studies')
