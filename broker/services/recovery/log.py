"""The audit log in a recovery: the mirrored checkpoints checked with the checkpoint key, the
mirrored batches replayed against them one at a time (phase 1), then read again, checked
again and written a chunk at a time (phase 2), so memory does not grow with the log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import text

from broker.adapters.db.models import (
    AuditCheckpoint,
    AuditEvent,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.adapters.objectstore.base import ObjectStore
from broker.auditlog.checkpoint import (
    CheckpointError,
    format_verifier_key,
    verify_checkpoint,
)
from broker.auditlog.index import index_of
from broker.auditlog.proofs import leaf_hash
from broker.auditlog.verifier import LogReplay, LogTampered
from broker.container import Escrow
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import OPERATOR, PrincipalKind
from broker.services import audit
from broker.services.recovery.bucket import Bucket, RecoveryFailed


def read_log(escrow: Escrow, bucket: Bucket, checkpoint_key: bytes | None) -> None:
    """Every mirrored checkpoint checked against the checkpoint key, then every mirrored entry
    replayed against them, one batch in memory at a time: the log is recovered up to the
    newest checkpoint (the entries are read again when written)."""
    store, origin = escrow.store, escrow.settings.origin
    if checkpoint_key is None:
        return  # reported with the keys
    verifier = format_verifier_key(origin, checkpoint_key)
    for key in store.list_keys(audit.CHECKPOINT_PREFIX):
        note = store.get_bytes(key).decode()
        try:
            checkpoint = verify_checkpoint(note, verifier)
        except CheckpointError as error:
            raise RecoveryFailed(
                f"checkpoint {key} does not verify as {origin!r} with the checkpoint key "
                f"({error})",
                hint="if the bucket's checkpoints name another origin (their first line) than "
                "the one recorded in deployment.json, run `escrow init` in a new "
                "ESCROW_DATA_DIR against this store (it takes the origin from the checkpoints) "
                "and recover there; " + _LOG_HINT,
            ) from None
        bucket.checkpoints[checkpoint.size] = note
        bucket.roots[checkpoint.size] = checkpoint.root
    for _, vouched in _replayed(store, bucket.roots):
        if vouched:
            bucket.entries += 1
        else:
            bucket.dropped_entries += 1


def _replayed(store: ObjectStore, roots: dict[int, bytes]) -> Iterator[tuple[bytes, bool]]:
    """Every mirrored entry, and whether a checkpoint vouches for it: those up to the newest
    checkpoint are checked against the checkpoints as they come; later ones are left out."""
    newest = max(roots, default=0)
    replay = LogReplay(roots=roots)
    try:
        for leaf in _batches(store):
            vouched = replay.size < newest
            if vouched:
                replay.add(replay.size, leaf)
            yield leaf, vouched
        replay.finish(newest)
    except LogTampered as error:
        raise RecoveryFailed(f"the mirrored log is damaged: {error}", hint=_LOG_HINT) from None


_LOG_HINT = (
    "restore the audit/ objects from the mirror; a log that does not match its signed "
    "checkpoints must not be recovered as if it were whole"
)


def _batches(store: ObjectStore) -> Iterator[bytes]:
    """Every mirrored leaf once, in order. Batches written by two processes at once may overlap
    (each mirrors from what it listed): the overlap must repeat the same leaves. A gap, a
    differing overlap or a short batch is named. Keys sort by first entry, so an overlap lies
    within the leaves kept from the batches before: from the last one's start on."""
    kept: list[bytes] = []  # the leaves from entry `kept_from` up to `read` (exclusive)
    kept_from = read = 0
    for key in store.list_keys(audit.ENTRIES_PREFIX):
        start, end = audit.batch_range(key)
        if start < kept_from:  # list_keys sorts; a key out of order is not one of ours
            raise RecoveryFailed(f"batch {key} is listed out of order", hint=_LOG_HINT)
        if start > read:
            raise RecoveryFailed(
                f"batch {key} starts at entry {start}, but the batches before end at "
                f"{read}: entries {read}..{start - 1} are missing",
                hint=_LOG_HINT,
            )
        lines = store.get_bytes(key).split(b"\n")
        if lines[-1] != b"" or len(lines) - 1 != end - start:
            raise RecoveryFailed(
                f"batch {key} is truncated: it holds {len(lines) - 1} whole entries, "
                f"not {end - start}",
                hint=_LOG_HINT,
            )
        leaves = lines[:-1]
        for seq, leaf in enumerate(leaves, start):
            if seq < read:
                if kept[seq - kept_from] != leaf:
                    raise RecoveryFailed(
                        f"batch {key} holds another entry {seq} than an earlier batch",
                        hint=_LOG_HINT,
                    )
                continue
            read += 1
            yield leaf
        kept = leaves + kept[end - kept_from :] if end < read else leaves
        kept_from = start


RECOVERED_ISSUER = "urn:weights-escrow:recovered"


_WRITE_CHUNK = 1000  # entries per flush: memory stays flat however long the log is


def _event_row(
    seq: int, leaf: bytes, digest: bytes, subtrees: bytes, event: dict[str, Any],
    models: dict[str, str],
) -> AuditEvent:
    subject = dict(event.get("subject") or {})
    if "model" not in subject and subject.get("deposit") in models:
        subject["model"] = models[subject["deposit"]]
    index = index_of(event["actor"], subject)
    return AuditEvent(
        seq=seq, leaf=leaf, leaf_hash=digest, action=event["action"],
        created_at=datetime.fromisoformat(event["time"].replace("Z", "+00:00")),
        org=index.org, model=index.model, user_id=index.user_id, actor=index.actor,
        subtrees=subtrees,
    )


def _user_ids(event: dict[str, Any]) -> Iterator[int]:
    for value in (event.get("subject", {}).get("user"), _user_actor(event["actor"])):
        if isinstance(value, str) and value.isdigit():
            yield int(value)


def _reserve_user_ids(uow: UnitOfWork, ids: set[int]) -> None:
    """The log names people by user id; those ids stay theirs. A disabled placeholder holds each
    one (its profile is not in the bucket), so a new account never takes an id the log uses."""
    moment = now()
    for user_id in sorted(ids):
        uow.session.add(User(id=user_id, issuer=RECOVERED_ISSUER, subject=f"user-{user_id}",
                             created_at=moment, disabled_at=moment))
    uow.session.flush()
    if ids and uow.session.get_bind().dialect.name == "postgresql":
        uow.session.execute(text(  # explicit ids do not move the sequence on PostgreSQL
            "SELECT setval(pg_get_serial_sequence('users', 'id'), :top)"), {"top": max(ids)})


def _user_actor(actor: dict[str, str]) -> str | None:
    return actor.get("id") if actor.get("kind") == PrincipalKind.USER else None


def write_log(uow: UnitOfWork, bucket: Bucket, store: ObjectStore) -> None:
    """The entries read from the bucket again, a chunk at a time, and checked against the
    checkpoints again: a bucket changed since it was read fails here, before the commit."""
    models = {d.manifest["deposit_id"]: d.manifest["model"] for d in bucket.deposits}
    user_ids: set[int] = set()
    vouched = (leaf for leaf, ok in _replayed(store, bucket.roots) if ok)
    seq = 0
    while chunk := list(islice(vouched, _WRITE_CHUNK)):
        digests = [leaf_hash(leaf) for leaf in chunk]
        for leaf, digest, subtrees in zip(chunk, digests, uow.extend_tree(digests), strict=True):
            event = json.loads(leaf)
            user_ids.update(_user_ids(event))
            uow.session.add(_event_row(seq, leaf, digest, subtrees, event, models))
            seq += 1
        uow.session.flush()
    _reserve_user_ids(uow, user_ids)
    for size, note in bucket.checkpoints.items():
        uow.session.add(AuditCheckpoint(size=size, root=bucket.roots[size], note=note))
    uow.session.flush()
    uow.audit(AuditAction.ESCROW_RECOVERED, OPERATOR, {}, {
        "deposits": len(bucket.deposits), "entries": bucket.entries,
        "unsealed_deposits": bucket.unsealed, "dropped_entries": bucket.dropped_entries,
    })
