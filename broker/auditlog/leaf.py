"""Audit log leaves: canonical JSON (RFC 8785) and their RFC 9162 leaf hashes. Pure."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

LEAF_PREFIX = b"\x00"  # RFC 9162 §2.1.1: domain separation of leaves from interior nodes
NODE_PREFIX = b"\x01"


def canonical_json(value: Any) -> bytes:
    """The one byte form of `value` that everyone recomputes the same way (RFC 8785)."""
    return rfc8785.dumps(value)


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()
