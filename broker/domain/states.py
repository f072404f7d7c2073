"""The states a deposit, one of its files, an access request and a grant can be in.

Each member is its string (`StrEnum`): the database columns keep their strings (no migration),
JSON answers and audit leaves carry the same text as before, and a row read back (a plain str)
compares equal to its member. A misspelt member fails the type check.
"""

from __future__ import annotations

from enum import StrEnum


class DepositState(StrEnum):
    OPEN = "open"  # receiving files
    VERIFYING = "verifying"  # finalized, a verify job queued or running
    SEALED = "sealed"  # verified and signed
    FAILED = "failed"  # verification failed; the lab may reopen it


class FileState(StrEnum):
    PENDING = "pending"  # planned, no upload started
    UPLOADING = "uploading"  # a multipart upload open
    UPLOADED = "uploaded"  # completed, not verified yet
    VERIFIED = "verified"
    FAILED = "failed"


class RequestState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    WITHDRAWN = "withdrawn"


class GrantState(StrEnum):
    """Worked out from a grant's period and revocation at a moment, not stored."""

    ACTIVE = "active"
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
