"""Proof generation from stored nodes, checked by brute force against the RFC's own definitions.

The reference functions below are RFC 9162 §2.1.1 MTH, §2.1.3.1 PATH and §2.1.4.1 PROOF /
SUBPROOF written as the RFC states them (recursive, over all leaves). The fast code must give the
same bytes for every size 1..70 and every index or size pair, reading storage once per call.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import pytest

from broker.auditlog import merkle, proofs

MAX_SIZE = 70
LEAVES = [proofs.leaf_hash(f"event {i}".encode()) for i in range(MAX_SIZE)]


# --- the reference: RFC 9162 verbatim -------------------------------------------------------


def split_point(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def reference_root(leaf_hashes: list[bytes]) -> bytes:
    """MTH(D[n])."""
    n = len(leaf_hashes)
    if n == 0:
        return proofs.EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = split_point(n)
    return proofs.node_hash(reference_root(leaf_hashes[:k]), reference_root(leaf_hashes[k:]))


def reference_inclusion_proof(m: int, leaf_hashes: list[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    n = len(leaf_hashes)
    if n == 1:
        return []
    k = split_point(n)
    if m < k:
        return reference_inclusion_proof(m, leaf_hashes[:k]) + [reference_root(leaf_hashes[k:])]
    return reference_inclusion_proof(m - k, leaf_hashes[k:]) + [reference_root(leaf_hashes[:k])]


def reference_subproof(m: int, leaf_hashes: list[bytes], known: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(leaf_hashes)
    if m == n:
        return [] if known else [reference_root(leaf_hashes)]
    k = split_point(n)
    if m <= k:
        return reference_subproof(m, leaf_hashes[:k], known) + [reference_root(leaf_hashes[k:])]
    return reference_subproof(m - k, leaf_hashes[k:], False) + [reference_root(leaf_hashes[:k])]


def reference_consistency_proof(m: int, leaf_hashes: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]); empty for m == n, as verifiers expect."""
    return reference_subproof(m, leaf_hashes, True)


# --- a store like the database's: nodes written by `append`, reads counted -------------------


def build(leaf_hashes: list[bytes]) -> tuple[dict[merkle.NodeId, bytes], list[list[bytes]]]:
    """(every stored node, the frontier at each size 0..n)."""
    nodes: dict[merkle.NodeId, bytes] = {}
    frontiers: list[list[bytes]] = [[]]
    for size, leaf in enumerate(leaf_hashes):
        created, frontier = merkle.append(size, frontiers[-1], leaf)
        nodes.update(created)
        frontiers.append(frontier)
    return nodes, frontiers


NODES, FRONTIERS = build(LEAVES)


class CountingStore:
    """Answers `read` from NODES and remembers every call, as a test double for one query."""

    def __init__(self, nodes: Mapping[merkle.NodeId, bytes] = NODES) -> None:
        self.nodes = nodes
        self.calls: list[Collection[merkle.NodeId]] = []

    def read(self, ids: Collection[merkle.NodeId]) -> Mapping[merkle.NodeId, bytes]:
        self.calls.append(ids)
        return {i: self.nodes[i] for i in ids if i in self.nodes}

    def assert_one_small_read(self, size: int) -> None:
        assert len(self.calls) <= 1
        for ids in self.calls:
            assert 0 < len(ids) <= 2 * math.ceil(math.log2(size)) + 2


def complete_node_ids(size: int) -> set[merkle.NodeId]:
    return {(level, index) for level in range(size.bit_length()) for index in range(size >> level)}


# --- building -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", range(MAX_SIZE + 1))
def test_appending_stores_every_complete_node_with_its_subtree_hash(size):
    nodes, _ = build(LEAVES[:size])
    assert set(nodes) == complete_node_ids(size)
    for (level, index), value in nodes.items():
        assert value == reference_root(LEAVES[index << level : (index + 1) << level])


@pytest.mark.parametrize("size", range(MAX_SIZE + 1))
def test_the_frontier_is_the_stored_nodes_named_by_frontier_ids(size):
    assert FRONTIERS[size] == [NODES[i] for i in merkle.frontier_ids(size)]
    assert len(merkle.frontier_ids(size)) == size.bit_count()


@pytest.mark.parametrize("size", range(MAX_SIZE + 1))
def test_root_from_frontier_is_the_rfc_tree_hash(size):
    want = reference_root(LEAVES[:size])
    assert merkle.root_from_frontier(FRONTIERS[size]) == want
    assert merkle.root_of_leaves(LEAVES[:size]) == want


def test_append_returns_the_new_leaf_first_and_each_completed_parent_after_it():
    created, frontier = merkle.append(7, FRONTIERS[7], LEAVES[7])
    assert [node for node, _ in created] == [(0, 7), (1, 3), (2, 1), (3, 0)]
    assert frontier == [NODES[(3, 0)]]


def test_append_refuses_a_frontier_that_does_not_fit_the_size():
    with pytest.raises(merkle.MerkleError, match="frontier has 1 hashes, want 2 for size 3"):
        merkle.append(3, FRONTIERS[2], LEAVES[3])


def test_append_refuses_a_leaf_hash_of_the_wrong_length():
    with pytest.raises(merkle.MerkleError, match="leaf hash is 5 bytes, want 32"):
        merkle.append(0, [], b"event")


# --- proofs from storage, against the reference ---------------------------------------------


@pytest.mark.parametrize("size", range(MAX_SIZE + 1))
def test_root_at_an_earlier_size_is_read_from_the_frontier_nodes(size):
    store = CountingStore()
    assert merkle.root(size, store.read) == reference_root(LEAVES[:size])
    if size:
        assert [set(ids) for ids in store.calls] == [set(merkle.frontier_ids(size))]
    else:
        assert store.calls == []


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_inclusion_proof_is_the_rfc_path_for_every_index(size):
    root = reference_root(LEAVES[:size])
    for index in range(size):
        store = CountingStore()
        proof = merkle.inclusion_proof(index, size, store.read)
        assert proof == reference_inclusion_proof(index, LEAVES[:size])
        store.assert_one_small_read(size)
        proofs.verify_inclusion(index, size, LEAVES[index], proof, root)


@pytest.mark.parametrize("size2", range(1, MAX_SIZE + 1))
def test_consistency_proof_is_the_rfc_proof_for_every_older_size(size2):
    root2 = reference_root(LEAVES[:size2])
    for size1 in range(1, size2 + 1):
        store = CountingStore()
        proof = merkle.consistency_proof(size1, size2, store.read)
        assert proof == reference_consistency_proof(size1, LEAVES[:size2])
        store.assert_one_small_read(size2)
        root1 = reference_root(LEAVES[:size1])
        proofs.verify_consistency(size1, size2, root1, root2, proof)


def test_storage_is_not_asked_when_the_proof_needs_no_hash():
    store = CountingStore()
    assert merkle.inclusion_proof(0, 1, store.read) == []
    assert merkle.consistency_proof(5, 5, store.read) == []
    assert store.calls == []


def test_a_proof_of_a_later_leaf_does_not_verify_against_an_earlier_root():
    proof = merkle.inclusion_proof(3, 9, CountingStore().read)
    with pytest.raises(proofs.RootMismatchError):
        proofs.verify_inclusion(3, 9, LEAVES[3], proof, reference_root(LEAVES[:8]))


def test_a_rewritten_leaf_breaks_consistency_with_the_old_root():
    rewritten = [*LEAVES[:20]]
    rewritten[4] = proofs.leaf_hash(b"something else")
    nodes, _ = build(rewritten)
    proof = merkle.consistency_proof(10, 20, CountingStore(nodes).read)
    with pytest.raises(proofs.RootMismatchError, match="first tree: root mismatch at size 10"):
        proofs.verify_consistency(
            10, 20, reference_root(LEAVES[:10]), reference_root(rewritten), proof
        )


# --- bad arguments and missing nodes --------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda read: merkle.inclusion_proof(5, 5, read), "index 5 is beyond tree size 5"),
        (lambda read: merkle.inclusion_proof(0, 0, read), "index 0 is beyond tree size 0"),
        (lambda read: merkle.inclusion_proof(-1, 5, read), "index must be a non-negative"),
        (lambda read: merkle.consistency_proof(6, 5, read), "size1 6 is larger than size2 5"),
        (lambda read: merkle.consistency_proof(0, 5, read), "empty tree"),
        (lambda read: merkle.consistency_proof(0, 0, read), "empty tree"),
        (lambda read: merkle.root(-1, read), "size must be a non-negative"),
    ],
)
def test_out_of_range_arguments_are_refused(call, message):
    with pytest.raises(merkle.MerkleError, match=message):
        call(CountingStore().read)


def test_a_node_missing_from_storage_is_an_error_not_a_wrong_proof():
    nodes = dict(NODES)
    del nodes[(2, 1)]
    with pytest.raises(merkle.MerkleError, match=r"1 of \d+ missing, e.g. \(2, 1\)"):
        merkle.inclusion_proof(0, 8, CountingStore(nodes).read)
