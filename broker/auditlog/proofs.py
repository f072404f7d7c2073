"""Verify RFC 9162 Merkle proofs: inclusion and consistency. Standard library only.

This file imports nothing from `broker` and nothing outside the standard library, so an auditor can
copy it next to their own script (or import it alone) and check the broker's proofs without
trusting the broker's code. Semantics follow RFC 9162 §2.1.3.2 and §2.1.4.2 and the verifier of
github.com/transparency-dev/merkle (`proof/verify.go`), whose test vectors this file passes.

Subtree proofs (draft-ietf-plants-merkle-tree-certs, "Merkle Tree Certificates") are included
because an ordinary consistency proof is the special case of a subtree consistency proof that
starts at leaf 0: one procedure serves both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32  # SHA-256
LEAF_PREFIX = b"\x00"  # RFC 9162 §2.1.1: leaves and interior nodes are hashed apart (domain
NODE_PREFIX = b"\x01"  # separation), so a leaf can never be passed off as a node or vice versa.
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({}) = HASH(), not a leaf hash


class ProofError(ValueError):
    """A proof does not show what it claims, or its arguments are out of range."""


class RootMismatchError(ProofError):
    """The proof is well formed but leads to another root: the log or the proof was changed."""

    def __init__(self, what: str, size: int, calculated: bytes, expected: bytes) -> None:
        super().__init__(
            f"{what}: root mismatch at size {size}: "
            f"calculated {calculated.hex()}, expected {expected.hex()}"
        )
        self.size = size
        self.calculated = calculated
        self.expected = expected


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 §2.1.1: HASH(0x00 || leaf)."""
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: HASH(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


# --- inclusion ------------------------------------------------------------------------------


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root that `proof` leads to from leaf `index` of a tree of `size` leaves."""
    what = "inclusion proof"
    _check_counts(what, index=index, size=size)
    if index >= size:
        raise ProofError(f"{what}: index {index} is beyond tree size {size}")
    _check_hash(f"{what}: leaf hash", leaf_hash)
    inner, border = _decompose_inclusion(index, size)
    _check_proof(what, proof, inner + border)
    # Below the fork with the right edge, a sibling sits left or right as the index bit says;
    # above it every sibling is a complete subtree on the left.
    seed = leaf_hash
    for level, sibling in enumerate(proof[:inner]):
        right_child = (index >> level) & 1
        seed = node_hash(sibling, seed) if right_child else node_hash(seed, sibling)
    for sibling in proof[inner:]:
        seed = node_hash(sibling, seed)
    return seed


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `proof` shows leaf `index` is in the tree of `size` with `root`."""
    calculated = root_from_inclusion_proof(index, size, leaf_hash, proof)
    _match("inclusion proof", size, calculated, root)


def _decompose_inclusion(index: int, size: int) -> tuple[int, int]:
    """(inner, border): proof hashes below and above where the paths to `index` and
    `size - 1` meet. Their sum is the exact proof length."""
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


# --- consistency ----------------------------------------------------------------------------


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless `proof` shows the tree of `size2` with `root2` extends the tree
    of `size1` with `root1` (nothing removed, reordered or rewritten)."""
    what = "consistency proof"
    _check_counts(what, size1=size1, size2=size2)
    if size1 > size2:
        raise ProofError(f"{what}: size1 {size1} is larger than size2 {size2}")
    if size1 == 0:
        # RFC 9162 §2.1.4 defines proofs for 0 < size1 only; every tree extends the empty one,
        # so a caller holding a size-0 checkpoint has nothing to check and must not ask.
        raise ProofError(f"{what}: from an empty tree (size1 0) proves nothing")
    _verify_extension(what, 0, size1, size2, root1, root2, proof)


def verify_subtree_inclusion(
    index: int, start: int, end: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `proof` shows leaf `index` is in subtree [start, end) with hash
    `root` (Merkle Tree Certificates draft, subtree inclusion proof)."""
    what = "subtree inclusion proof"
    _check_counts(what, index=index, start=start, end=end)
    _check_subtree(what, start, end)
    if not start <= index < end:
        raise ProofError(f"{what}: index {index} is outside subtree [{start}, {end})")
    # A subtree hash depends only on its own leaves, so this is an ordinary proof in the
    # tree made of just those leaves.
    calculated = root_from_inclusion_proof(index - start, end - start, leaf_hash, proof)
    _match(what, end - start, calculated, root)


def verify_subtree_consistency(
    start: int, end: int, size: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless `proof` shows subtree [start, end) with hash `root1` is part of
    the tree of `size` with root `root2` (Merkle Tree Certificates draft)."""
    what = "subtree consistency proof"
    _check_counts(what, start=start, end=end, size=size)
    _check_subtree(what, start, end)
    if end > size:
        raise ProofError(f"{what}: subtree end {end} is beyond tree size {size}")
    if start == end:
        # An empty subtree sits in every tree; only its own hash can be wrong.
        _check_proof(what, proof, 0)
        _match(f"{what}: empty subtree", 0, root1, EMPTY_ROOT)
        return
    _verify_extension(what, start, end, size, root1, root2, proof)


# The role of each proof hash after the seed. `_LEFT` hashes are left siblings, inside the
# subtree (`_LEFT_INSIDE`, so they rebuild root1 too) or not; `_RIGHT` ones are right siblings.
_LEFT_INSIDE, _LEFT, _RIGHT = "left-inside", "left", "right"


def _verify_extension(
    what: str,
    start: int,
    end: int,
    size: int,
    root1: bytes,
    root2: bytes,
    proof: Sequence[bytes],
) -> None:
    """RFC 9162 §2.1.4.2 generalised to a subtree [start, end) as in the MTC draft:
    rebuild root1 (fr) and root2 (sr) together from one seed, climbing one level per hash."""
    seed_in_proof, roles = _extension_roles(start, end, size)
    first = 1 if seed_in_proof else 0
    _check_proof(what, proof, first + len(roles))
    # If [start, end) is one complete node the verifier already has its hash (root1); otherwise
    # the proof starts with the largest complete node flush with the subtree's right edge.
    fr = sr = proof[0] if seed_in_proof else root1
    for role, sibling in zip(roles, proof[first:], strict=True):
        if role == _RIGHT:
            sr = node_hash(sr, sibling)
            continue
        if role == _LEFT_INSIDE:
            fr = node_hash(sibling, fr)
        sr = node_hash(sibling, sr)
    _match(f"{what}: first tree", end - start, fr, root1)
    _match(f"{what}: second tree", size, sr, root2)


def _extension_roles(start: int, end: int, size: int) -> tuple[bool, list[str]]:
    """(whether the seed is the first proof hash, the role of every following proof hash).

    Which proof hash goes where depends only on the three numbers, never on hash values, so the
    walk is done first and the proof length checked exactly before any hashing."""
    fn, sn, tn = start, end - 1, size - 1  # first and last leaf of the subtree, last of the tree
    if sn == tn:
        while fn != sn:  # flush with the right edge: nothing to fold until one node remains
            fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
    else:
        while fn != sn and sn & 1:  # climb while the subtree's last node is a right child
            fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
    seed_in_proof = fn != sn
    roles: list[str] = []
    while tn > 0:
        if sn & 1 or sn == tn:
            roles.append(_LEFT_INSIDE if fn < sn else _LEFT)
            while not sn & 1:  # on the ragged right edge a node may skip levels: no hash there
                fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
        else:
            roles.append(_RIGHT)
        fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
    return seed_in_proof, roles


def _check_subtree(what: str, start: int, end: int) -> None:
    """A valid subtree is a node of the tree, or the left edge of one (start 0), or empty."""
    if start > end:
        raise ProofError(f"{what}: subtree start {start} is after its end {end}")
    span = 1 << (end - start - 1).bit_length() if end > start else 1  # bit_ceil(end - start)
    if start % span:
        raise ProofError(f"{what}: subtree [{start}, {end}) is not aligned to {span} leaves")


# --- shared checks --------------------------------------------------------------------------


def _check_counts(what: str, **counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProofError(f"{what}: {name} must be a non-negative integer, got {value!r}")


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, want {HASH_SIZE}")


def _check_proof(what: str, proof: Sequence[bytes], want: int) -> None:
    if len(proof) != want:
        raise ProofError(f"{what}: wrong proof size {len(proof)}, want {want}")
    for position, value in enumerate(proof):
        _check_hash(f"{what}: proof hash {position}", value)


def _match(what: str, size: int, calculated: bytes, expected: bytes) -> None:
    # Roots are public values, so an ordinary comparison leaks nothing.
    if calculated != expected:
        raise RootMismatchError(what, size, calculated, expected)
