"""verification jobs per file: a deposit's files are verified by separate jobs

Each job of kind `verify` names the file it checks (`file_idx`), so that several workers split
one deposit; the job that records the last file decides the deposit. A job with no file (those
queued before this revision) still verifies the whole deposit. `deposit_id` is indexed: the
last file's job counts the deposit's open jobs.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 13:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('file_idx', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_deposit_id'), ['deposit_id'], unique=False)


def downgrade() -> None:
    # Per-file jobs still open would each verify the whole deposit under the old code: keep one.
    op.execute(
        "DELETE FROM jobs WHERE file_idx IS NOT NULL AND state IN ('queued', 'running') "
        "AND id NOT IN (SELECT min(id) FROM jobs WHERE file_idx IS NOT NULL "
        "AND state IN ('queued', 'running') GROUP BY deposit_id)"
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_deposit_id'))
        batch_op.drop_column('file_idx')
