"""The broker's Ed25519 signing keys (manifests, audit checkpoints), wrapped by key custody."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select

from broker.adapters.custody.base import KeyCustody
from broker.adapters.db.models import SigningKey
from broker.adapters.db.uow import UnitOfWork
from broker.adapters.objectstore.base import ObjectStore
from broker.auditlog.checkpoint import format_verifier_key
from broker.auditlog.leaf import canonical_json
from broker.domain.events import AuditAction
from broker.domain.principals import Principal
from broker.errors import ConfigError
from broker.services.views_types import PublishedKeys

PURPOSES = ("manifest", "checkpoint")


def custody_context(purpose: str, key_id: str) -> dict[str, str]:
    return {"purpose": f"{purpose}-signing-key", "key": key_id}


def key_id_of(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


def ensure_signing_keys(uow: UnitOfWork, custody: KeyCustody, actor: Principal) -> None:
    """Create the manifest and checkpoint keys if this deployment has none yet."""
    for purpose in PURPOSES:
        if _active(uow, purpose) is not None:
            continue
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        key_id = key_id_of(public)
        raw = private.private_bytes_raw()
        uow.session.add(
            SigningKey(
                id=key_id,
                purpose=purpose,
                public_key=public,
                wrapped_private=custody.wrap(raw, custody_context(purpose, key_id)),
            )
        )
        uow.audit(AuditAction.SIGNING_KEY_CREATED, actor, {"key": key_id}, {"purpose": purpose})
    uow.commit()


def has_signing_keys(uow: UnitOfWork) -> bool:
    return uow.session.scalar(select(SigningKey.id).limit(1)) is not None


def _active(uow: UnitOfWork, purpose: str) -> SigningKey | None:
    return uow.session.scalar(
        select(SigningKey).where(SigningKey.purpose == purpose, SigningKey.active.is_(True))
    )


def active_key(uow: UnitOfWork, purpose: str) -> SigningKey:
    key = _active(uow, purpose)
    if key is None:
        raise ConfigError(
            f"no {purpose} signing key exists", hint="run `escrow init` to create the broker's keys"
        )
    return key


def sign(uow: UnitOfWork, custody: KeyCustody, purpose: str, message: bytes) -> tuple[str, bytes]:
    """(key id, Ed25519 signature of message) with the active key for `purpose`."""
    key = active_key(uow, purpose)
    raw = custody.unwrap(key.wrapped_private, custody_context(purpose, key.id))
    return key.id, Ed25519PrivateKey.from_private_bytes(raw).sign(message)


def note_verifier_key(name: str, public_key: bytes) -> str:
    """C2SP signed-note verifier key `<name>+<hex key id>+<base64(0x01 || key)>` for Ed25519."""
    return format_verifier_key(name, public_key)


KEYS_PREFIX = "keys/signing/"


def key_object(key: SigningKey) -> str:
    return f"{KEYS_PREFIX}{key.purpose}-{key.id}.json"


def key_document(key: SigningKey) -> bytes:
    """A signing key as mirrored to the bucket: public key and custody-wrapped private key, so
    a deployment recovered from the bucket keeps the keys every client has pinned."""
    return canonical_json(
        {
            "purpose": key.purpose,
            "key_id": key.id,
            "public_key": base64.b64encode(key.public_key).decode(),
            "wrapped_private": base64.b64encode(key.wrapped_private).decode(),
            "active": key.active,
            "created": key.created_at.isoformat(),
        }
    )


def mirror_keys(uow: UnitOfWork, store: ObjectStore) -> int:
    """Write every signing key to the bucket (again: a rotation re-wraps them); the count."""
    keys = list(uow.session.scalars(select(SigningKey)))
    for key in keys:
        store.put_bytes(key_object(key), key_document(key))
    return len(keys)


def published_keys(uow: UnitOfWork, origin: str) -> PublishedKeys:
    manifest = active_key(uow, "manifest")
    checkpoint = active_key(uow, "checkpoint")
    return {
        "manifest": {
            "algorithm": "ed25519",
            "key_id": manifest.id,
            "public_key": base64.b64encode(manifest.public_key).decode(),
        },
        "checkpoint": {
            "algorithm": "ed25519",
            "key_id": checkpoint.id,
            "public_key": base64.b64encode(checkpoint.public_key).decode(),
            "origin": origin,
            "verifier_key": note_verifier_key(origin, checkpoint.public_key),
        },
    }
