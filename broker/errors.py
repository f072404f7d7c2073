"""One error hierarchy for the whole broker.

Every error carries what a person needs to act on it: a lowercase context first, then what was
expected and what was found, and a hint saying what to do next. The HTTP layer maps `status`
to the response code and renders the rest as RFC 9457 problem+json; the CLI prints the same text.
Secrets must never be put into an error's message or hint.
"""

from __future__ import annotations


class EscrowError(Exception):
    """Base error. `status` is the HTTP status the API answers with."""

    status = 500
    title = "internal error"

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """The message and hint as one text for a person."""
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message

    def __str__(self) -> str:
        return self.message


class BadRequest(EscrowError):
    status = 400
    title = "bad request"


class InvalidInput(EscrowError):
    status = 422
    title = "invalid input"


class PayloadTooLarge(EscrowError):
    """A request body past the route's limit (refused before it is read)."""

    status = 413
    title = "content too large"


class Unauthorized(EscrowError):
    status = 401
    title = "unauthorized"


class Forbidden(EscrowError):
    status = 403
    title = "forbidden"


class NotFound(EscrowError):
    status = 404
    title = "not found"


class Conflict(EscrowError):
    status = 409
    title = "conflict"


class TamperDetected(EscrowError):
    """Stored bytes or a signature do not match what was recorded."""

    status = 409
    title = "tamper detected"


class StorageError(EscrowError):
    """The object store failed or refused an operation."""

    status = 503
    title = "object store unavailable"


class ObjectMissing(StorageError):
    status = 404
    title = "object not found"


class StoreFull(StorageError):
    """The object store has no room left (a full disk, a quota, an S3 storage or quota error).

    Not "unavailable": the store answered, and retrying will not help until an operator frees
    or adds space."""

    status = 507
    title = "object store full"


class CustodyError(EscrowError):
    """Key custody could not wrap or unwrap a secret."""

    status = 503
    title = "key custody unavailable"


class Unavailable(EscrowError):
    """A part the broker depends on (database, audit log) failed; the change did not happen."""

    status = 503
    title = "service unavailable"


class OutcomeUnknown(EscrowError):
    """The database connection was lost while a change was being committed: it may or may not
    have been made. Never reported as "not made": a retry with the same Idempotency-Key finds
    out, and answers with the first outcome if there was one."""

    status = 503
    title = "outcome unknown"
    type = "urn:weights-escrow:problem:outcome-unknown"


class ConfigError(EscrowError):
    title = "configuration error"


class UploadLost(Conflict):
    """The object store no longer knows a file's multipart upload (a lifecycle rule aborted it,
    or the store was restored): the broker has started the file over on a new upload."""

    title = "upload lost"


class NotSupported(StorageError):
    """The object store does not implement an operation (an S3-compatible server that answers
    NotImplemented or MethodNotAllowed). Retrying will not help; the README's "S3 compatibility"
    table says which operations are optional and what the broker does without them."""

    status = 501
    title = "not supported by the object store"
