"""The transparency-dev/merkle proof vectors (tests/vectors/merkle): one test per vector file.

Each file says whether verification must fail (`wantErr`); a vector passes when `ProofError` is
raised exactly then. Hashes are standard base64 and a `null` proof is an empty one (see the
vectors' README). The subtree directories (Merkle Tree Certificates draft) run against the
subtree verifiers. `reference_roots.json` is checked against the hashing and the root code.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.auditlog import merkle, proofs

VECTORS_DIR = Path(__file__).resolve().parent.parent / "vectors" / "merkle"
EXPECTED_COUNTS = {  # README.md of the vectors, "Contents"
    "inclusion": 98,
    "consistency": 98,
    "subtreeinclusion": 204,
    "subtreeconsistency": 118,
}


def b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def hashes(values: list[str] | None) -> list[bytes]:
    return [b64(v) for v in values or []]


def check_inclusion(v: dict[str, Any]) -> None:
    proofs.verify_inclusion(
        v["leafIdx"], v["treeSize"], b64(v["leafHash"]), hashes(v["proof"]), b64(v["root"])
    )


def check_consistency(v: dict[str, Any]) -> None:
    proofs.verify_consistency(
        v["size1"], v["size2"], b64(v["root1"]), b64(v["root2"]), hashes(v["proof"])
    )


def check_subtree_inclusion(v: dict[str, Any]) -> None:
    proofs.verify_subtree_inclusion(
        v["leafIdx"], v["start"], v["end"], b64(v["leafHash"]), hashes(v["proof"]), b64(v["root"])
    )


def check_subtree_consistency(v: dict[str, Any]) -> None:
    proofs.verify_subtree_consistency(
        v["start"], v["end"], v["size"], b64(v["root1"]), b64(v["root2"]), hashes(v["proof"])
    )


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "inclusion": check_inclusion,
    "consistency": check_consistency,
    "subtreeinclusion": check_subtree_inclusion,
    "subtreeconsistency": check_subtree_consistency,
}


def vector_paths() -> list[str]:
    return sorted(
        p.relative_to(VECTORS_DIR).as_posix()
        for kind in CHECKS
        for p in (VECTORS_DIR / kind).rglob("*.json")
    )


def test_every_vector_directory_has_the_documented_number_of_files():
    paths = vector_paths()
    counts = {kind: sum(p.startswith(f"{kind}/") for p in paths) for kind in CHECKS}
    assert counts == EXPECTED_COUNTS


@pytest.mark.parametrize("path", vector_paths())
def test_vector(path):
    vector = json.loads((VECTORS_DIR / path).read_text())
    check = CHECKS[path.split("/", 1)[0]]
    if vector["wantErr"]:
        with pytest.raises(proofs.ProofError):
            check(vector)
    else:
        check(vector)


# --- reference_roots.json -------------------------------------------------------------------

REFERENCE = json.loads((VECTORS_DIR / "reference_roots.json").read_text())
LEAF_HASHES = [proofs.leaf_hash(bytes.fromhex(leaf)) for leaf in REFERENCE["leaves"]]


def stored_nodes(leaf_hashes: list[bytes]) -> dict[merkle.NodeId, bytes]:
    """Every complete node of the tree, as the storage layer keeps them."""
    nodes: dict[merkle.NodeId, bytes] = {}
    frontier: list[bytes] = []
    for size, leaf in enumerate(leaf_hashes):
        new_nodes, frontier = merkle.append(size, frontier, leaf)
        nodes.update(new_nodes)
    return nodes


NODES = stored_nodes(LEAF_HASHES)


def read(ids):
    return {i: NODES[i] for i in ids}


def test_the_empty_tree_root_is_the_hash_of_nothing():
    assert proofs.EMPTY_ROOT.hex() == REFERENCE["empty_tree_root"]
    assert merkle.root(0, read) == proofs.EMPTY_ROOT
    assert merkle.root_from_frontier([]) == proofs.EMPTY_ROOT


@pytest.mark.parametrize("case", REFERENCE["hasher"], ids=lambda c: c["desc"])
def test_hasher_known_answer(case):
    if case["op"] == "empty_root":
        got = proofs.EMPTY_ROOT
    elif case["op"] == "leaf":
        got = proofs.leaf_hash(bytes.fromhex(case["data"]))
    else:
        got = proofs.node_hash(bytes.fromhex(case["left"]), bytes.fromhex(case["right"]))
    assert got.hex() == case["want"]


@pytest.mark.parametrize("size", range(len(REFERENCE["roots_by_tree_size"])))
def test_root_at_every_size_matches_the_reference(size):
    want = REFERENCE["roots_by_tree_size"][size]
    assert merkle.root(size, read).hex() == want
    assert merkle.root_of_leaves(LEAF_HASHES[:size]).hex() == want


def test_stored_nodes_match_the_reference_node_hashes():
    for level, row in enumerate(REFERENCE["node_hashes_by_level"]):
        for index, want in enumerate(row):
            assert NODES[(level, index)].hex() == want


@pytest.mark.parametrize(
    "case", REFERENCE["inclusion_proofs"], ids=lambda c: f"{c['index']}-in-{c['size']}"
)
def test_inclusion_proof_matches_the_reference_and_verifies(case):
    index, size = case["index"], case["size"]
    proof = merkle.inclusion_proof(index, size, read)
    assert [h.hex() for h in proof] == case["proof"]
    root = bytes.fromhex(REFERENCE["roots_by_tree_size"][size])
    proofs.verify_inclusion(index, size, LEAF_HASHES[index], proof, root)


@pytest.mark.parametrize(
    "case", REFERENCE["consistency_proofs"], ids=lambda c: f"{c['size1']}-to-{c['size2']}"
)
def test_consistency_proof_matches_the_reference_and_verifies(case):
    size1, size2 = case["size1"], case["size2"]
    proof = merkle.consistency_proof(size1, size2, read)
    assert [h.hex() for h in proof] == case["proof"]
    roots = REFERENCE["roots_by_tree_size"]
    proofs.verify_consistency(
        size1, size2, bytes.fromhex(roots[size1]), bytes.fromhex(roots[size2]), proof
    )
