"""key releases: each is numbered within its grant and file, the numbers unique

A release used to count the file's earlier releases, then insert; now one INSERT takes the next
number (and none once the policy's limit is reached), and the unique constraint makes a
duplicate number impossible.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 19:40:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('key_releases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('number', sa.Integer(), nullable=True))
    # The releases so far, numbered in the order they were made (one pass, not a count per row:
    # a grant may hold thousands of releases of one file).
    op.execute(
        "UPDATE key_releases SET number = ordered.n FROM (SELECT id, row_number() OVER "
        "(PARTITION BY grant_id, file_idx ORDER BY id) AS n FROM key_releases) AS ordered "
        "WHERE key_releases.id = ordered.id"
    )
    with op.batch_alter_table('key_releases', schema=None) as batch_op:
        batch_op.alter_column('number', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_index('ix_key_releases_grant_file')
        batch_op.create_unique_constraint(
            batch_op.f('uq_key_releases_grant_id_file_idx_number'),
            ['grant_id', 'file_idx', 'number'],
        )


def downgrade() -> None:
    with op.batch_alter_table('key_releases', schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f('uq_key_releases_grant_id_file_idx_number'), type_='unique'
        )
        batch_op.create_index('ix_key_releases_grant_file', ['grant_id', 'file_idx'], unique=False)
        batch_op.drop_column('number')
