"""Build the audit log's RFC 9162 Merkle tree and generate its proofs from stored nodes. Pure.

Storage keeps every complete subtree hash as it is created, keyed by `NodeId = (level, index)`:
the subtree of 2**level leaves covering [index * 2**level, (index + 1) * 2**level); level 0 holds
the leaf hashes. The log head keeps the *frontier*: the hashes of the maximal complete subtrees
covering [0, size), left to right, largest first (a compact range). Appending then costs
O(log n) hashing and no reads.

A tree of any size is made of complete subtrees, so every hash a proof needs is either a stored
node or the fold of a few of them (an incomplete subtree on the right edge). Each function below
works out the whole set of node ids first (O(log n) of them), asks storage for them in one call,
then combines: one database query per proof. Outputs equal RFC 9162 §2.1.3.1 PATH and §2.1.4.1
PROOF exactly; `proofs.py` verifies them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from broker.auditlog.proofs import EMPTY_ROOT, HASH_SIZE, node_hash

NodeId = tuple[int, int]  # (level, index)
ReadNodes = Callable[[Collection[NodeId]], Mapping[NodeId, bytes]]
Range = tuple[int, int]  # leaves [begin, end)


class MerkleError(ValueError):
    """Bad arguments (an index or size out of range) or nodes that storage does not have."""


# --- building the tree ----------------------------------------------------------------------


def append(
    size: int, frontier: Sequence[bytes], leaf_hash: bytes
) -> tuple[list[tuple[NodeId, bytes]], list[bytes]]:
    """Add leaf number `size` to the tree of `size` leaves whose frontier is `frontier`.

    Returns the new complete nodes to store (the leaf's level-0 node first, then every node it
    completes, bottom up) and the frontier of the tree of `size + 1` leaves."""
    _check_count("append: size", size)
    if len(frontier) != size.bit_count():
        raise MerkleError(
            f"append: frontier has {len(frontier)} hashes, want {size.bit_count()} for size {size}"
        )
    for position, value in enumerate(frontier):
        _check_hash(f"append: frontier hash {position}", value)
    _check_hash("append: leaf hash", leaf_hash)
    new_frontier = list(frontier)
    level, index, value = 0, size, leaf_hash
    created = [((level, index), value)]
    # A right child completes its parent, whose left child is the frontier's smallest subtree.
    while index & 1:
        value = node_hash(new_frontier.pop(), value)
        level, index = level + 1, index >> 1
        created.append(((level, index), value))
    new_frontier.append(value)
    return created, new_frontier


def last_leaf(node: NodeId) -> int:
    """The leaf whose append completes `node`: the last of its subtree's leaves."""
    level, index = node
    return ((index + 1) << level) - 1


def root_from_frontier(frontier: Sequence[bytes]) -> bytes:
    """The root of the tree whose frontier is `frontier` (EMPTY_ROOT for no leaves)."""
    if not frontier:
        return EMPTY_ROOT
    # RFC 9162 MTH splits off the largest power of two on the left, so the incomplete right
    # part is folded first: right to left.
    value = frontier[-1]
    for left in reversed(frontier[:-1]):
        value = node_hash(left, value)
    return value


def root_of_leaves(leaf_hashes: Iterable[bytes]) -> bytes:
    """The root over all `leaf_hashes`, in O(log n) memory (for recomputing a whole log)."""
    frontier: list[bytes] = []
    for size, leaf_hash in enumerate(leaf_hashes):
        _, frontier = append(size, frontier, leaf_hash)
    return root_from_frontier(frontier)


def frontier_ids(size: int) -> list[NodeId]:
    """The ids of the nodes making up the frontier of a tree of `size` leaves."""
    _check_count("frontier: size", size)
    return _range_ids((0, size))


# --- proofs from stored nodes ---------------------------------------------------------------


def root(size: int, read: ReadNodes) -> bytes:
    """The root of the tree when it had `size` leaves."""
    _check_count("root: size", size)
    return _range_hashes([(0, size)], read)[0] if size else EMPTY_ROOT


def inclusion_proof(index: int, size: int, read: ReadNodes) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]): the audit path, bottom up."""
    _check_count("inclusion proof: index", index)
    _check_count("inclusion proof: size", size)
    if index >= size:
        raise MerkleError(f"inclusion proof: index {index} is beyond tree size {size}")
    return _range_hashes(_path_ranges(index, size), read)


def consistency_proof(size1: int, size2: int, read: ReadNodes) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(size1, D[0:size2]); empty when the sizes are equal."""
    _check_count("consistency proof: size1", size1)
    _check_count("consistency proof: size2", size2)
    if size1 > size2:
        raise MerkleError(f"consistency proof: size1 {size1} is larger than size2 {size2}")
    if size1 == 0:
        # Verifiers reject it (RFC 9162 defines proofs for 0 < size1): there is nothing to prove.
        raise MerkleError("consistency proof: from an empty tree (size1 0) proves nothing")
    return _range_hashes(_subproof_ranges(size1, size2), read)


def _path_ranges(index: int, size: int) -> list[Range]:
    """The leaf ranges whose hashes make up PATH(index, D[0:size]), bottom up."""
    ranges: list[Range] = []
    begin, end = 0, size
    while end - begin > 1:
        middle = begin + _largest_power_of_two_below(end - begin)
        if index < middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((begin, middle))
            begin = middle
    return ranges[::-1]


def _subproof_ranges(size1: int, size2: int) -> list[Range]:
    """The leaf ranges whose hashes make up SUBPROOF(size1, D[0:size2], true), in proof order.

    The RFC's recursion, unrolled: walk down from the whole tree, keeping the sibling of each
    step, until the range ends at size1."""
    ranges: list[Range] = []
    begin, end = 0, size2
    known = True  # the verifier holds the root of the range ending at size1 while still true
    while end != size1:
        middle = begin + _largest_power_of_two_below(end - begin)
        if size1 <= middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((begin, middle))
            begin = middle
            known = False
    if not known:
        ranges.append((begin, end))
    return ranges[::-1]


def _range_hashes(ranges: Sequence[Range], read: ReadNodes) -> list[bytes]:
    """MTH of each range, reading every stored node needed in one call."""
    ids = [_range_ids(r) for r in ranges]
    nodes = _read_nodes(read, {node for range_ids in ids for node in range_ids})
    return [root_from_frontier([nodes[node] for node in range_ids]) for range_ids in ids]


def _range_ids(leaves: Range) -> list[NodeId]:
    """The complete subtrees that make up `leaves`, largest first.

    Every range a proof needs starts at a multiple of a power of two at least as large as the
    range, so taking the largest power of two left each time gives aligned, stored nodes."""
    begin, end = leaves
    ids: list[NodeId] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        ids.append((level, begin >> level))
        begin += 1 << level
    return ids


def _read_nodes(read: ReadNodes, ids: set[NodeId]) -> Mapping[NodeId, bytes]:
    if not ids:
        return {}  # nothing to ask storage for (a one-leaf tree, or equal sizes)
    nodes = read(frozenset(ids))
    missing = sorted(ids - nodes.keys())
    if missing:
        shown = ", ".join(str(node) for node in missing[:5])
        raise MerkleError(f"stored nodes: {len(missing)} of {len(ids)} missing, e.g. {shown}")
    for node in ids:
        _check_hash(f"stored node {node}", nodes[node])
    return nodes


def _largest_power_of_two_below(n: int) -> int:
    """RFC 9162 §2.1.1: k, the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_count(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MerkleError(f"{what} must be a non-negative integer, got {value!r}")


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise MerkleError(f"{what} is {len(value)} bytes, want {HASH_SIZE}")
