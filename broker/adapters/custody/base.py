"""The key custody port: wrap and unwrap small secrets (deposit identities, signing keys).

A wrapped blob names its backend and key id, so keys can be rotated and old blobs still read.
`context` binds a blob to what it protects (e.g. {"deposit": "<id>"}): unwrapping with another
context fails. Secrets never appear in errors or logs.
"""

from __future__ import annotations

from typing import Protocol


class KeyCustody(Protocol):
    # Read-only: an implementation may expose them as plain attributes or as properties.
    @property
    def name(self) -> str: ...  # the backend, as written in blobs: "local", "aws-kms"
    @property
    def key_id(self) -> str: ...  # the key new blobs are wrapped with; compare to plan rotation

    def wrap(self, secret: bytes, context: dict[str, str]) -> bytes: ...
    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes: ...
    def check(self) -> str: ...
