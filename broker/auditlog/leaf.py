"""Audit log leaves: canonical JSON (RFC 8785) and their RFC 9162 leaf hashes. Pure.

The hashing itself lives in `proofs.py` (the file auditors copy), so the broker and its auditors
hash with the very same code; the names are re-exported here for the callers that build leaves.
"""

from __future__ import annotations

from typing import Any

import rfc8785

from broker.auditlog.proofs import LEAF_PREFIX, NODE_PREFIX, leaf_hash, node_hash

__all__ = ["LEAF_PREFIX", "NODE_PREFIX", "canonical_json", "leaf_hash", "node_hash"]


def canonical_json(value: Any) -> bytes:
    """The one byte form of `value` that everyone recomputes the same way (RFC 8785)."""
    return rfc8785.dumps(value)
