"""release agreements: their texts per deposit, lab check-ins, trustee votes, releases

A sealed version's agreement binds: it is replaced only by an amendment its own rule allows, and
a release under one of its triggers is permanent.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 13:14:52.695236
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agreement_checkins',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_agreement_checkins_org_id_organisations')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_agreement_checkins_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agreement_checkins'))
    )
    with op.batch_alter_table('agreement_checkins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agreement_checkins_org_id'), ['org_id'], unique=False)

    op.create_table('release_agreements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('deposit_id', sa.String(length=32), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.String(length=80), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lab_released_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['deposit_id'], ['deposits.id'], name=op.f('fk_release_agreements_deposit_id_deposits')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_release_agreements')),
    sa.UniqueConstraint('deposit_id', 'number', name=op.f('uq_release_agreements_deposit_id_number'))
    )
    with op.batch_alter_table('release_agreements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_release_agreements_deposit_id'), ['deposit_id'], unique=False)

    op.create_table('agreement_releases',
    sa.Column('deposit_id', sa.String(length=32), nullable=False),
    sa.Column('agreement_id', sa.Integer(), nullable=False),
    sa.Column('trigger', sa.String(length=64), nullable=False),
    sa.Column('unlocks', sa.String(length=128), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agreement_id'], ['release_agreements.id'], name=op.f('fk_agreement_releases_agreement_id_release_agreements')),
    sa.ForeignKeyConstraint(['deposit_id'], ['deposits.id'], name=op.f('fk_agreement_releases_deposit_id_deposits')),
    sa.PrimaryKeyConstraint('deposit_id', name=op.f('pk_agreement_releases'))
    )
    op.create_table('agreement_votes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('agreement_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('trustee', sa.String(length=320), nullable=False),
    sa.Column('proposal_sha256', sa.String(length=64), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('ssh_signature', sa.Text(), nullable=False),
    sa.Column('ssh_key_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['agreement_id'], ['release_agreements.id'], name=op.f('fk_agreement_votes_agreement_id_release_agreements')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_agreement_votes_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agreement_votes'))
    )
    with op.batch_alter_table('agreement_votes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agreement_votes_agreement_id'), ['agreement_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('agreement_votes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agreement_votes_agreement_id'))

    op.drop_table('agreement_votes')
    op.drop_table('agreement_releases')
    with op.batch_alter_table('release_agreements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_release_agreements_deposit_id'))

    op.drop_table('release_agreements')
    with op.batch_alter_table('agreement_checkins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agreement_checkins_org_id'))

    op.drop_table('agreement_checkins')
