"""keyless hosted grants: inference and internals grants need no researcher key

`grants.key_id` and `grants.recipient` become nullable: a grant of hosted access (kind inference
or internals) releases no file key, so it is pinned to no key, and a policy can give it to
people who registered none. A check constraint keeps every grant that releases keys (weights,
hosting) pinned to a key and its recipient. `hosted_keys.last_used_at`: when an API key last
authenticated a request (to the minute), shown to its owner.

Going down fails while keyless grants exist (their key cannot be made up): revoke and delete
them first.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 19:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

RELEASING_HAS_KEY = (
    "kind NOT IN ('weights', 'hosting') OR (key_id IS NOT NULL AND recipient IS NOT NULL)"
)


def upgrade() -> None:
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.alter_column('key_id', existing_type=sa.String(length=32), nullable=True)
        batch_op.alter_column('recipient', existing_type=sa.Text(), nullable=True)
        batch_op.create_check_constraint(op.f('ck_grants_releasing_kind_has_key'), RELEASING_HAS_KEY)
    with op.batch_alter_table('hosted_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('hosted_keys', schema=None) as batch_op:
        batch_op.drop_column('last_used_at')
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_grants_releasing_kind_has_key'), type_='check')
        batch_op.alter_column('recipient', existing_type=sa.Text(), nullable=False)
        batch_op.alter_column('key_id', existing_type=sa.String(length=32), nullable=False)
