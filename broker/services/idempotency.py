"""Idempotent changes: a call made again with the same Idempotency-Key gets the first call's
answer instead of making the change twice.

A record is kept per (caller, key): a hash of the request (the same key for another request is
refused) and the answer, encrypted under a key derived from the Idempotency-Key. The database
holds neither the Idempotency-Key nor a readable answer (answers can carry wrapped file keys
and new tokens); only the client that chose the key can have it replayed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from broker.adapters.db.models import IdempotencyRecord
from broker.adapters.db.uow import UnitOfWork, rowcount
from broker.domain.clock import now
from broker.domain.principals import Principal
from broker.errors import BadRequest, Conflict, InvalidInput

HEADER = "Idempotency-Key"
KEPT_FOR = timedelta(hours=24)
_DOMAIN = b"weights-escrow idempotency v1"
_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:")


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Call:
    """One state-changing call made under an Idempotency-Key."""

    record_id: str
    request_sha256: str
    key: str

    def seal(self, answer: Answer | None) -> bytes | None:
        if answer is None:
            return None
        plain = json.dumps(
            {"status": answer.status, "content_type": answer.content_type,
             "body": answer.body.decode("latin-1")}
        ).encode()
        nonce = os.urandom(12)
        return nonce + ChaCha20Poly1305(self._cipher_key()).encrypt(
            nonce, plain, self.record_id.encode()
        )

    def open(self, sealed: bytes) -> Answer:
        try:
            plain = ChaCha20Poly1305(self._cipher_key()).decrypt(
                sealed[:12], sealed[12:], self.record_id.encode()
            )
        except InvalidTag:
            raise Conflict(
                "the answer kept for this Idempotency-Key does not open",
                hint="send the request again with a new Idempotency-Key",
            ) from None
        fields = json.loads(plain)
        return Answer(fields["status"], fields["content_type"], fields["body"].encode("latin-1"))

    def _cipher_key(self) -> bytes:
        return HKDF(hashes.SHA256(), 32, salt=_DOMAIN, info=b"answer").derive(self.key.encode())


def call_of(principal: Principal, key: str, method: str, path: str, body: bytes) -> Call:
    """The call a request makes, or BadRequest naming what is wrong with its key."""
    if not 8 <= len(key) <= 128 or not set(key) <= _ALLOWED:
        raise BadRequest(
            f"the {HEADER} header must be 8 to 128 letters, digits or -_.: characters",
            hint="send a fresh random value (e.g. a UUID) per change, the same one on retry",
        )
    scope = b"\0".join([_DOMAIN, principal.kind.encode(), principal.id.encode(), key.encode()])
    request = hashlib.sha256(method.encode() + b" " + path.encode() + b"\0" + body)
    return Call(hashlib.sha256(scope).hexdigest(), request.hexdigest(), key)


def earlier_answer(uow: UnitOfWork, call: Call) -> Answer | None:
    """The first outcome of this call if it was made (None: it was not, go ahead)."""
    record = uow.session.get(IdempotencyRecord, call.record_id)
    if record is None or record.created_at < now() - KEPT_FOR:
        return None
    if record.request_sha256 != call.request_sha256:
        raise InvalidInput(
            f"this {HEADER} was used for a different request",
            hint="use a new Idempotency-Key for each different change",
        )
    if record.answer is None:
        raise Conflict(
            f"this change was made (at {record.created_at.isoformat()}), but its answer was "
            "not kept (the broker stopped before writing it)",
            hint="look at the current state (e.g. GET the resource) instead of retrying",
        )
    return call.open(record.answer)


def record(session: Session, call: Call, answer: Answer | None) -> None:
    """Write the call's record in `session`'s transaction (the change's own)."""
    session.add(
        IdempotencyRecord(
            id=call.record_id,
            request_sha256=call.request_sha256,
            answer=call.seal(answer),
            created_at=now(),
        )
    )


def record_answer(uow: UnitOfWork, call: Call, answer: Answer) -> None:
    """Add the answer to a record written earlier without one."""
    uow.session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.id == call.record_id)
        .values(answer=call.seal(answer))
    )
    uow.commit()


def forget_old(uow: UnitOfWork) -> int:
    """Drop records past their keeping time; how many."""
    dropped = uow.session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now() - KEPT_FOR)
    )
    uow.commit()
    return rowcount(dropped)
