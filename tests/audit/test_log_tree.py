"""The audit log's Merkle tree as stored: every append grows it, proofs come from O(log n) node
reads, and they verify with the stand-alone proof module."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from broker.adapters.db.models import AuditEvent
from broker.auditlog import merkle
from broker.auditlog.proofs import verify_consistency, verify_inclusion
from broker.domain.principals import OPERATOR
from broker.errors import BadRequest
from broker.services import audit


def append(escrow, count: int) -> None:
    for number in range(count):
        with escrow.uow() as uow:
            uow.audit("test.event", OPERATOR, {"org": "acme-ai"}, {"n": number})
            uow.commit()


def leaf_hashes(escrow) -> list[bytes]:
    with escrow.uow() as uow:
        return [bytes(h) for h in uow.session.scalars(
            select(AuditEvent.leaf_hash).order_by(AuditEvent.seq))]


def test_the_head_root_is_the_rfc9162_root_of_every_leaf(escrow):
    append(escrow, 13)
    hashes = leaf_hashes(escrow)
    with escrow.uow() as uow:
        size, root = audit.head(uow)
    assert size == len(hashes)
    assert root == merkle.root_of_leaves(hashes)


def test_inclusion_and_consistency_proofs_verify_for_every_size(escrow):
    append(escrow, 11)
    hashes = leaf_hashes(escrow)
    total = len(hashes)
    with escrow.uow() as uow:
        read = audit.read_nodes(uow)
        roots = {n: merkle.root(n, read) for n in range(1, total + 1)}
        for size in range(1, total + 1):
            assert roots[size] == merkle.root_of_leaves(hashes[:size])
            for seq in range(size):
                proof = audit.inclusion_proof(uow, seq, size)
                verify_inclusion(seq, size, hashes[seq], proof, roots[size])
            for first in range(1, size + 1):
                proof = audit.consistency_proof(uow, first, size)
                verify_consistency(first, size, roots[first], roots[size], proof)


def test_a_proof_reads_the_nodes_it_needs_in_one_query(escrow):
    append(escrow, 37)
    with escrow.uow() as uow:
        calls = []
        real = audit.read_nodes(uow)

        def counting(ids):
            calls.append(len(ids))
            return real(ids)

        merkle.inclusion_proof(5, 37, counting)
        merkle.consistency_proof(9, 37, counting)
    assert len(calls) == 2
    assert max(calls) <= 2 * 37 .bit_length() + 2


def test_each_event_stores_the_subtrees_its_leaf_completes(escrow):
    append(escrow, 8)
    hashes = leaf_hashes(escrow)
    with escrow.uow() as uow:
        stored = dict(uow.session.execute(select(AuditEvent.seq, AuditEvent.subtrees)).all())
    frontier: list[bytes] = []
    for seq, digest in enumerate(hashes):
        created, frontier = merkle.append(seq, frontier, digest)
        assert bytes(stored[seq]) == b"".join(value for _, value in created[1:])
        # leaf number seq completes one subtree per trailing one bit of seq
        assert len(stored[seq]) == 32 * (((seq + 1) & -(seq + 1)).bit_length() - 1)


def test_proofs_outside_the_log_are_refused_with_the_log_size(escrow):
    append(escrow, 3)
    with escrow.uow() as uow:
        size, _ = audit.head(uow)
        with pytest.raises(BadRequest, match=f"the log has {size} entries"):
            audit.inclusion_proof(uow, size, size + 1)
        with pytest.raises(BadRequest, match="no consistency proof"):
            audit.consistency_proof(uow, 2, 1)


def test_the_leaf_is_exactly_the_bytes_hashed(escrow):
    append(escrow, 1)
    with escrow.uow() as uow:
        row = uow.session.scalar(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1))
        assert bytes(row.leaf_hash) == hashlib.sha256(b"\x00" + bytes(row.leaf)).digest()


def test_the_worker_signs_a_checkpoint_when_the_log_grew(escrow):
    from broker.services.copies import mirror_checkpoint

    first = mirror_checkpoint(escrow, -1)
    append(escrow, 2)
    assert mirror_checkpoint(escrow, -1) == first  # younger than the interval: kept
    with escrow.uow() as uow:
        newest = audit.sign_checkpoint(escrow, uow)
        size, note = newest.size, newest.note
    assert size == first + 2
    assert escrow.store.get_bytes(f"audit/checkpoints/{size}").decode() == note


def test_the_checkpoint_interval_must_be_a_positive_number():
    from broker.config import load_settings
    from broker.errors import ConfigError

    assert load_settings({"ESCROW_CHECKPOINT_INTERVAL_S": "5"}).checkpoint_interval_s == 5
    with pytest.raises(ConfigError, match="ESCROW_CHECKPOINT_INTERVAL_S='soon'"):
        load_settings({"ESCROW_CHECKPOINT_INTERVAL_S": "soon"})
