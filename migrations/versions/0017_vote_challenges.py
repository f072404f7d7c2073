"""trustees' votes by age challenge

A trustee may prove a vote by answering a secret encrypted to a proven key of theirs
(`agreement_vote_challenges`, the secret kept only hashed, single use, with an expiry) instead of
an SSH signature: each vote records its proof kind and the key that made it.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 16:20:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agreement_vote_challenges',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('agreement_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('proposal_sha256', sa.String(length=64), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('secret_sha256', sa.LargeBinary(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['agreement_id'], ['release_agreements.id'], name=op.f('fk_agreement_vote_challenges_agreement_id_release_agreements')),
    sa.ForeignKeyConstraint(['key_id'], ['researcher_keys.id'], name=op.f('fk_agreement_vote_challenges_key_id_researcher_keys')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_agreement_vote_challenges_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agreement_vote_challenges'))
    )
    with op.batch_alter_table('agreement_vote_challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agreement_vote_challenges_agreement_id'), ['agreement_id'], unique=False)

    with op.batch_alter_table('agreement_votes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('proof', sa.String(length=16), nullable=False, server_default='ssh-signature'))
        batch_op.add_column(sa.Column('key_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('challenge_id', sa.String(length=32), nullable=True))
        batch_op.alter_column('ssh_signature', existing_type=sa.Text(), nullable=True)
        batch_op.alter_column('ssh_key_id', existing_type=sa.String(length=32), nullable=True)
    op.execute("UPDATE agreement_votes SET key_id = ssh_key_id")
    with op.batch_alter_table('agreement_votes', schema=None) as batch_op:
        batch_op.alter_column('key_id', existing_type=sa.String(length=32), nullable=False)
        batch_op.alter_column('proof', existing_type=sa.String(length=16), server_default=None)


def downgrade() -> None:
    op.execute("DELETE FROM agreement_votes WHERE proof <> 'ssh-signature'")
    with op.batch_alter_table('agreement_votes', schema=None) as batch_op:
        batch_op.alter_column('ssh_key_id', existing_type=sa.String(length=32), nullable=False)
        batch_op.alter_column('ssh_signature', existing_type=sa.Text(), nullable=False)
        batch_op.drop_column('challenge_id')
        batch_op.drop_column('key_id')
        batch_op.drop_column('proof')
    with op.batch_alter_table('agreement_vote_challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agreement_vote_challenges_agreement_id'))
    op.drop_table('agreement_vote_challenges')
