"""hosted access: API keys bound to a grant, quotas per grant, usage counters

`grants.requests_per_minute` and `grants.tokens_per_day` (an inference grant's quotas, from its
policy; null: no limit), `hosted_keys` (an API key of one grant, stored as SHA-256) and
`hosted_usage` (per grant, per minute and per UTC day: requests and tokens, incremented by
UPSERT; a day's row is reported once on the audit log).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 17:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requests_per_minute', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('tokens_per_day', sa.BigInteger(), nullable=True))
    op.create_table('hosted_keys',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('secret_sha256', sa.LargeBinary(length=32), nullable=False),
    sa.Column('grant_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'],
                            name=op.f('fk_hosted_keys_grant_id_grants')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_hosted_keys_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hosted_keys'))
    )
    with op.batch_alter_table('hosted_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hosted_keys_grant_id'), ['grant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_hosted_keys_user_id'), ['user_id'], unique=False)
    op.create_table('hosted_usage',
    sa.Column('grant_id', sa.String(length=32), nullable=False),
    sa.Column('period', sa.String(length=8), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('requests', sa.Integer(), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), nullable=False),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'],
                            name=op.f('fk_hosted_usage_grant_id_grants')),
    sa.PrimaryKeyConstraint('grant_id', 'period', 'starts_at', name=op.f('pk_hosted_usage'))
    )


def downgrade() -> None:
    op.drop_table('hosted_usage')
    with op.batch_alter_table('hosted_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hosted_keys_user_id'))
        batch_op.drop_index(batch_op.f('ix_hosted_keys_grant_id'))
    op.drop_table('hosted_keys')
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.drop_column('tokens_per_day')
        batch_op.drop_column('requests_per_minute')
