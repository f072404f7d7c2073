"""audit_append: the audit log's append as one server-side call on PostgreSQL

`UnitOfWork.audit` on PostgreSQL sends its events at commit, each one call of this function
pipelined with the COMMIT: the head is locked, the leaf completed with its number and time,
hashed, the tree grown, the event inserted and the head moved without a round trip to the
client while the head is locked. The leaf bytes and the hashes are those the broker's Python
makes (RFC 8785 leaf, RFC 9162 hashes): tests/db/test_audit_append.py compares them.
SQLite appends from Python as before.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-09 10:00:00.000000
"""

from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


# The leaf is canonical JSON with its keys sorted: action, actor, details, seq, subject, time.
# The client sends the bytes before the number (`leaf_before`, ending in '"seq":') and those between
# the number and the time (`leaf_between`, ending in '"time":"'); the function adds the number, the
# time (clock_timestamp, UTC, microseconds, as Python's "%Y-%m-%dT%H:%M:%S.%fZ") and '"}'.
# The frontier is the head's 32-byte subtree hashes, largest first; a leaf whose number ends in
# k one bits completes k subtrees, stored from level 1 up in its `subtrees`.
APPEND = r"""
CREATE FUNCTION audit_append(
    leaf_before bytea, leaf_between bytea, p_action varchar, p_org varchar, p_model varchar,
    p_user_id varchar, p_actor varchar
) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    head_size bigint;
    head_frontier bytea;
    stamp timestamptz;
    leaf bytea;
    digest bytea;
    node bytea;
    completed bytea := '\x'::bytea;
    bits bigint;
BEGIN
    SELECT size, frontier INTO STRICT head_size, head_frontier
        FROM audit_head WHERE id = 1 FOR UPDATE;
    stamp := clock_timestamp();  -- after the lock, so times follow numbers
    leaf := leaf_before || convert_to(head_size::text, 'UTF8') || leaf_between
        || convert_to(to_char(stamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'UTF8')
        || '\x227d'::bytea;
    digest := sha256('\x00'::bytea || leaf);
    node := digest;
    bits := head_size;
    WHILE bits & 1 = 1 LOOP
        node := sha256('\x01'::bytea || substr(head_frontier, length(head_frontier) - 31, 32)
                       || node);
        head_frontier := substr(head_frontier, 1, length(head_frontier) - 32);
        completed := completed || node;
        bits := bits >> 1;
    END LOOP;
    INSERT INTO audit_events
        (seq, leaf, leaf_hash, action, created_at, org, model, user_id, actor, subtrees)
        VALUES (head_size, leaf, digest, p_action, stamp, p_org, p_model, p_user_id, p_actor,
                completed);
    UPDATE audit_head SET size = head_size + 1, frontier = head_frontier || node WHERE id = 1;
    RETURN head_size;
END
$fn$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_append(bytea, bytea, varchar, varchar, varchar, varchar, varchar)")
