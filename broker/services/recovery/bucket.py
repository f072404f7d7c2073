"""Phase 1 of a recovery, the deposits: the signing keys (each unwrapped once, to prove the
master key), and each sealed deposit's signed manifest, wrapped identity, objects and
release agreements, checked; what is wrong is named in `Bucket.problems`."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.adapters.objectstore.base import ObjectStore
from broker.container import Escrow
from broker.domain.parts import payload_size
from broker.errors import EscrowError
from broker.services import signing
from broker.services.agreements import AGREEMENTS_DIR
from broker.services.deposits import (
    deposit_prefix,
    file_index,
    identity_context,
)


class RecoveryFailed(EscrowError):
    status = 409
    title = "recovery failed"


@dataclass
class DepositFromBucket:
    manifest: dict[str, Any]
    wrapped_identity: bytes
    headers: dict[int, bytes]
    # release agreements: (what identifies it, its text) oldest first; the release, if fired
    agreements: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)
    released: dict[str, Any] | None = None


@dataclass
class Bucket:
    """What the bucket holds, checked; `problems` says what is wrong with the rest."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    deposits: list[DepositFromBucket] = field(default_factory=list)
    checkpoints: dict[int, str] = field(default_factory=dict)
    roots: dict[int, bytes] = field(default_factory=dict)  # of the checkpoints, by size
    entries: int = 0  # the log's entries up to the newest checkpoint, checked (not kept)
    unsealed: list[str] = field(default_factory=list)
    dropped_entries: int = 0
    problems: list[str] = field(default_factory=list)


def read_keys(escrow: Escrow, bucket: Bucket) -> dict[str, bytes]:
    """The signing keys, each unwrapped once to prove the master key is the right one."""
    public: dict[str, bytes] = {}
    for key in escrow.store.list_keys(signing.KEYS_PREFIX):
        document = json.loads(escrow.store.get_bytes(key))
        wrapped = base64.b64decode(document["wrapped_private"])
        try:
            escrow.custody.unwrap(wrapped, signing.custody_context(
                document["purpose"], document["key_id"]))
        except EscrowError as error:
            bucket.problems.append(
                f"signing key {document['key_id']} cannot be unwrapped ({error.message}): "
                "is this the deployment's master key?"
            )
            continue
        bucket.keys.append(document)
        if document.get("active"):
            public[document["purpose"]] = base64.b64decode(document["public_key"])
    for purpose in signing.PURPOSES:
        if purpose not in public and not bucket.problems:
            bucket.problems.append(f"no active {purpose} signing key under {signing.KEYS_PREFIX}")
    return public


def deposit_ids(store: ObjectStore) -> list[str]:
    return sorted({key.split("/")[1] for key in store.list_keys("deposits/")})


def read_deposit(
    escrow: Escrow, bucket: Bucket, deposit_id: str, manifest_key: bytes | None
) -> None:
    store, prefix = escrow.store, deposit_prefix(deposit_id)
    if store.head(prefix + "manifest.json") is None:
        bucket.unsealed.append(deposit_id)
        return
    manifest_bytes = store.get_bytes(prefix + "manifest.json")
    signature = json.loads(store.get_bytes(prefix + "manifest.sig"))
    try:
        Ed25519PublicKey.from_public_bytes(manifest_key or b"").verify(
            base64.b64decode(signature["signature"]), manifest_bytes)
    except (InvalidSignature, ValueError):
        raise RecoveryFailed(
            "its manifest's signature does not verify with the manifest key",
            hint="restore manifest.json and manifest.sig from the mirror",
        ) from None
    manifest = json.loads(manifest_bytes)
    wrapped = store.get_bytes(prefix + "identity.wrapped")
    escrow.custody.unwrap(wrapped, identity_context(deposit_id))  # the master key opens it
    headers = {}
    for file in manifest["files"]:  # the objects the manifest names (a rekey's new ones)
        index = file_index(file["header"])
        headers[index] = store.get_bytes(prefix + file["header"])
        found = store.head(prefix + file["payload"])
        expected = payload_size(int(file["size"]))
        if found is None or found.size != expected:
            raise RecoveryFailed(
                f"object {prefix}{file['payload']} ({file['path']}) is "
                + ("missing" if found is None else f"{found.size} bytes, not {expected}"),
                hint="restore it from the mirror",
            )
    read = DepositFromBucket(manifest, wrapped, headers)
    _read_agreements(store, prefix, read)
    bucket.deposits.append(read)


def _read_agreements(store: ObjectStore, prefix: str, found: DepositFromBucket) -> None:
    """The deposit's release agreements and its release (`agreements.AGREEMENTS_DIR`); each
    text must hash to the SHA-256 recorded beside it (and on the audit log)."""
    directory = prefix + AGREEMENTS_DIR
    for key in store.list_keys(directory):
        if not key.endswith(".json") or key == directory + "released.json":
            continue
        document = json.loads(store.get_bytes(key))
        text = store.get_bytes(key.removesuffix(".json") + ".yaml")
        if hashlib.sha256(text).hexdigest() != document["sha256"]:
            raise RecoveryFailed(
                f"release agreement {key.removesuffix('.json')}.yaml does not hash to the "
                f"SHA-256 recorded for it ({document['sha256'][:16]}…)",
                hint="restore it from the mirror; its text is also on the audit log "
                "(agreement.attached or agreement.amended)",
            )
        found.agreements.append((document, text))
    if store.head(directory + "released.json") is not None:
        found.released = json.loads(store.get_bytes(directory + "released.json"))
