"""Replay a log's entries and check them against signed checkpoints. Pure.

Both the operator's self-check (entries read from the database) and an auditor's check over
the API (entries fetched page by page) feed entries here in order; memory stays constant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from broker.auditlog import merkle
from broker.auditlog.proofs import (
    EMPTY_ROOT,
    LEAF_PREFIX,
    NODE_PREFIX,
    ProofError,
    leaf_hash,
    verify_consistency,
)


class LogTampered(ValueError):
    """The entries do not form the log the checkpoints signed; the message says where."""


@dataclass
class LogReplay:
    """Feed `add(seq, leaf, recorded_hash)` in order, then `finish()`.

    `roots` maps checkpoint sizes to the roots they signed; a mismatch is located between the
    last checkpoint that still matches and the first that does not."""

    roots: Mapping[int, bytes] = field(default_factory=dict)
    size: int = 0
    frontier: list[bytes] = field(default_factory=list)
    last_good: int = 0

    def add(self, seq: int, leaf: bytes, recorded_hash: bytes | None = None) -> None:
        if seq != self.size:
            what = "missing" if seq > self.size else "out of order"
            raise LogTampered(f"entry {self.size} is {what}: the next entry served is {seq}")
        claimed = _claimed_seq(leaf, seq)
        if claimed != seq:
            raise LogTampered(f"entry {seq} says it is entry {claimed}: entries were swapped")
        digest = leaf_hash(leaf)
        if recorded_hash is not None and digest != recorded_hash:
            raise LogTampered(
                f"entry {seq} was changed: its bytes hash to {digest.hex()}, "
                f"the log recorded {recorded_hash.hex()}"
            )
        _, self.frontier = merkle.append(self.size, self.frontier, digest)
        self.size += 1
        self._check_root()

    def add_many(self, entries: Iterable[tuple[int, bytes, bytes | None]]) -> None:
        """`add(seq, leaf, recorded_hash)` for each entry, in a tight loop: the same checks,
        the same hashes (RFC 9162: SHA-256 of 0x00 || leaf, of 0x01 || left || right), the
        frontier grown in place instead of through `merkle.append`'s argument checks. For
        replaying millions of entries (the operator's `escrow audit verify`)."""
        sha256, roots, frontier = hashlib.sha256, self.roots, self.frontier
        decode = orjson.loads
        for seq, leaf, recorded_hash in entries:
            size = self.size
            if seq != size:
                self.add(seq, leaf, recorded_hash)  # raises, with the message
            try:
                claimed = decode(leaf)["seq"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                claimed = None
            if claimed != seq or type(claimed) is not int:
                self.add(seq, leaf, recorded_hash)  # raises, with the message
            value = sha256(LEAF_PREFIX + leaf).digest()
            if recorded_hash is not None and value != recorded_hash:
                self.add(seq, leaf, recorded_hash)  # raises, with the message
            # merkle.append: a right child completes its parent, whose left child is the
            # frontier's smallest subtree
            index = size
            while index & 1:
                value = sha256(NODE_PREFIX + frontier.pop() + value).digest()
                index >>= 1
            frontier.append(value)
            self.size = size + 1
            if self.size in roots:
                self._check_root()

    def _check_root(self) -> None:
        expected = self.roots.get(self.size)
        if expected is None:
            return
        if merkle.root_from_frontier(self.frontier) != expected:
            raise LogTampered(
                f"an entry among {self.last_good}..{self.size - 1} was changed or replaced: "
                f"the first {self.size} entries no longer hash to the root of the signed "
                f"checkpoint of size {self.size}"
                + (f" (the first {self.last_good} still do)" if self.last_good else "")
            )
        self.last_good = self.size

    def finish(self, size: int) -> bytes:
        """The root of the replayed log, which must have exactly `size` entries."""
        beyond = [n for n in self.roots if n > self.size]
        if beyond and self.size == size:
            raise LogTampered(
                f"the log has {self.size} entries, fewer than the {max(beyond)} of a checkpoint "
                "signed before: entries were removed"
            )
        if self.size != size:
            raise LogTampered(
                f"the log has {self.size} entries but the checkpoint covers {size}: "
                f"entries {self.size}..{size - 1} are missing"
                if self.size < size
                else f"the log has {self.size} entries, more than the checkpoint's {size}"
            )
        return merkle.root_from_frontier(self.frontier)


def _claimed_seq(leaf: bytes, position: int) -> int:
    try:
        value = orjson.loads(leaf)["seq"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise LogTampered(f"entry {position} is not an audit event: {error}") from None
    if not isinstance(value, int):
        raise LogTampered(f"entry {position} has no integer seq")
    return value


def verify_extension(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> None:
    """The log of (size2, root2) extends the one of (size1, root1). RFC 9162 defines no proof
    from the empty tree: every log extends it, so its root alone is checked."""
    if size1 == 0:
        if root1 != EMPTY_ROOT:
            raise ProofError("a log of size 0 must have the empty root")
        return
    verify_consistency(size1, size2, root1, root2, proof)
