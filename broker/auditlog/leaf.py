"""Audit log leaves: canonical JSON (RFC 8785) and their RFC 9162 leaf hashes. Pure.

The hashing itself lives in `proofs.py` (the file auditors copy), so the broker and its auditors
hash with the very same code; the names are re-exported here for the callers that build leaves.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from broker.auditlog.proofs import LEAF_PREFIX, NODE_PREFIX, leaf_hash, node_hash

__all__ = ["LEAF_PREFIX", "NODE_PREFIX", "canonical_json", "leaf_hash", "node_hash"]


def canonical_json(value: Any) -> bytes:
    """The one byte form of `value` that everyone recomputes the same way (RFC 8785).

    Every audit append and key release needs it, and `rfc8785` writes JSON in pure Python
    (about 7% of a key release's CPU). Where the standard library's sorted, compact JSON already
    is RFC 8785's form, that encoder (in C) writes it; anything else goes to `rfc8785`, which
    also raises its errors. tests/auditlog/test_canonical_json.py compares the two on random
    values."""
    if _stdlib_is_canonical(value):
        try:
            return _SORTED_COMPACT(value).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 refuses it with its own error
    return rfc8785.dumps(value)


_SORTED_COMPACT = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
).encode
_SAFE_INTEGER = 2**53 - 1  # RFC 8785 3.2.2.3: JSON numbers are IEEE 754 doubles


def _stdlib_is_canonical(value: Any) -> bool:
    """True when `value` holds none of what the two encoders write differently: floats
    (ECMAScript's shortest form), integers beyond 2**53 - 1 (refused by RFC 8785), non-ASCII
    object keys (RFC 8785 sorts keys by UTF-16 code units, Python by code points) and types
    other than the plain JSON ones (subclasses included)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_SAFE_INTEGER <= value <= _SAFE_INTEGER)
    if kind is dict:
        return all(
            type(key) is str and key.isascii() and _stdlib_is_canonical(item)
            for key, item in value.items()
        )
    if kind is list or kind is tuple:
        return all(_stdlib_is_canonical(item) for item in value)
    return False
