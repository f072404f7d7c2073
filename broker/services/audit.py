"""The audit log's read side: checkpoints, proofs, entries, filtered events, the self-check.

Appends happen in `UnitOfWork.audit`, inside the transaction of the change they record.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.exc import IntegrityError

from broker.adapters.db.models import AuditCheckpoint, AuditEvent, AuditHead
from broker.adapters.db.uow import UnitOfWork, split_hashes
from broker.adapters.objectstore.base import ObjectStore
from broker.auditlog import merkle
from broker.auditlog.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_body,
    format_note,
    note_key_id,
    verify_checkpoint,
)
from broker.auditlog.proofs import ProofError
from broker.auditlog.verifier import LogReplay, LogTampered, verify_extension
from broker.container import Escrow
from broker.domain.access import AuditScope, audit_scope
from broker.domain.clock import now
from broker.domain.principals import Principal
from broker.errors import BadRequest, Forbidden, NotFound, TamperDetected, Unavailable
from broker.services import signing
from broker.services.views_types import AuditEventView

PAGE_LIMIT = 1000
CHECKPOINT_PREFIX = "audit/checkpoints/"
ENTRIES_PREFIX = "audit/entries/"
BATCH_SIZE = 10_000  # entries per mirrored batch object
REPLAY_PAGE = 10_000  # entries read per query by the self-check


@dataclass(frozen=True)
class EventFilter:
    model: str | None = None
    org: str | None = None
    actor: str | None = None  # "kind:id" as on the leaf (a user's email is resolved before)
    user_id: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def head(uow: UnitOfWork) -> tuple[int, bytes]:
    """(size, root) of the log as this transaction sees it."""
    # Not session.get: appends change the head with plain SQL, behind the ORM's back.
    size, frontier = uow.rows(
        select(AuditHead.size, AuditHead.frontier).where(AuditHead.id == 1)
    ).one()
    return size, merkle.root_from_frontier(split_hashes(frontier))


def read_nodes(uow: UnitOfWork) -> merkle.ReadNodes:
    """The one query a proof needs: every complete subtree hash it names, each read from the
    event of the subtree's last leaf (level 0: its leaf hash; above: its `subtrees`)."""

    def read(ids: Collection[merkle.NodeId]) -> Mapping[merkle.NodeId, bytes]:
        if not ids:
            return {}
        by_leaf: dict[int, list[merkle.NodeId]] = {}
        for node in ids:  # a leaf's event holds its own hash and the subtrees it completes
            by_leaf.setdefault(merkle.last_leaf(node), []).append(node)
        rows = uow.rows(
            select(AuditEvent.seq, AuditEvent.leaf_hash, AuditEvent.subtrees).where(
                AuditEvent.seq.in_(list(by_leaf))
            )
        )
        found = {}
        for seq, digest, subtrees in rows:
            stored = [bytes(digest), *split_hashes(subtrees)]  # levels 0, 1, ... of this leaf
            for level, index in by_leaf[seq]:
                if level < len(stored):  # else storage lacks it: merkle names the missing node
                    found[level, index] = stored[level]
        return found

    return read


def latest_checkpoint(escrow: Escrow, uow: UnitOfWork, *, covering: int = 0) -> AuditCheckpoint:
    """The newest signed checkpoint. A new one is signed if the log grew and the newest is older
    than the checkpoint interval, or does not cover `covering` entries (on demand)."""
    newest = _newest(uow)
    if newest is not None and newest.size >= covering:
        age = (now() - newest.created_at).total_seconds()
        if age < escrow.settings.checkpoint_interval_s or newest.size == head(uow)[0]:
            return newest
    return sign_checkpoint(escrow, uow)


def sign_checkpoint(escrow: Escrow, uow: UnitOfWork) -> AuditCheckpoint:
    """Sign the log at its current size (once per size) and mirror it to the object store."""
    size, root = head(uow)
    existing = uow.session.get(AuditCheckpoint, size)
    if existing is not None:
        return existing
    origin = escrow.settings.origin
    body = checkpoint_body(origin, size, root)
    key = signing.active_key(uow, "checkpoint")
    _, signature = signing.sign(uow, escrow.custody, "checkpoint", body)
    note = format_note(body, origin, note_key_id(origin, key.public_key), signature)
    checkpoint = AuditCheckpoint(size=size, root=root, note=note)
    uow.session.add(checkpoint)
    try:
        uow.commit()
    except Unavailable as error:  # another process signed the same size first: use theirs
        if not isinstance(error.__cause__, IntegrityError):
            raise
        found = uow.session.get(AuditCheckpoint, size)
        assert found is not None
        return found
    mirror_entries(escrow, uow, size)  # first: every mirrored checkpoint has its entries there
    escrow.store.put_bytes(f"{CHECKPOINT_PREFIX}{size}", note.encode())
    return checkpoint


def mirrored_size(store: ObjectStore) -> int:
    """How many leading entries the bucket's append-only batches hold."""
    # max, not the last key's end: batches written concurrently may overlap
    return max((batch_range(key)[1] for key in store.list_keys(ENTRIES_PREFIX)), default=0)


def batch_key(start: int, end: int) -> str:
    return f"{ENTRIES_PREFIX}{start:016d}-{end:016d}.jsonl"


def batch_range(key: str) -> tuple[int, int]:
    """(start, end) of a batch from its key; ValueError if it is not a batch's key."""
    start, _, end = key.removeprefix(ENTRIES_PREFIX).removesuffix(".jsonl").partition("-")
    return int(start), int(end)


def mirror_entries(escrow: Escrow, uow: UnitOfWork, size: int) -> None:
    """Append the entries not yet in the bucket as new batch objects (one leaf per line, the
    exact bytes hashed): with the checkpoints, enough to rebuild the log from the bucket."""
    start = mirrored_size(escrow.store)
    for first in range(start, size, BATCH_SIZE):
        last = min(first + BATCH_SIZE, size)
        leaves = uow.session.scalars(
            select(AuditEvent.leaf)
            .where(AuditEvent.seq >= first, AuditEvent.seq < last)
            .order_by(AuditEvent.seq)
        )
        escrow.store.put_bytes(batch_key(first, last), b"".join(bytes(x) + b"\n" for x in leaves))


def checkpoint_at(uow: UnitOfWork, size: int) -> AuditCheckpoint:
    found = uow.session.get(AuditCheckpoint, size)
    if found is None:
        raise NotFound(
            f"no checkpoint was signed at size {size}",
            hint="GET /api/v1/audit/checkpoint gives the newest one",
        )
    return found


def _newest(uow: UnitOfWork) -> AuditCheckpoint | None:
    return uow.session.scalar(
        select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc()).limit(1)
    )


def consistency_proof(uow: UnitOfWork, size1: int, size2: int) -> list[bytes]:
    size, _ = head(uow)
    if not 0 <= size1 <= size2 <= size:
        raise BadRequest(
            f"no consistency proof from size {size1} to {size2}: the log has {size} entries",
            hint="ask with 0 <= first <= second <= the newest checkpoint's size",
        )
    if size1 == 0:  # every log extends the empty one; RFC 9162 defines no proof for it
        return []
    return merkle.consistency_proof(size1, size2, read_nodes(uow))


def inclusion_proof(uow: UnitOfWork, seq: int, size: int) -> list[bytes]:
    current, _ = head(uow)
    if not 0 <= seq < size <= current:
        raise BadRequest(
            f"no inclusion proof of entry {seq} in a log of size {size}: "
            f"the log has {current} entries",
            hint="ask with 0 <= seq < size <= the newest checkpoint's size",
        )
    return merkle.inclusion_proof(seq, size, read_nodes(uow))


def seq_of_leaf_hash(uow: UnitOfWork, digest: bytes) -> int:
    seq = uow.session.scalar(select(AuditEvent.seq).where(AuditEvent.leaf_hash == digest))
    if seq is None:
        raise NotFound(
            f"no audit entry has the leaf hash {digest.hex()}",
            hint="the leaf hash is SHA-256 of 0x00 followed by the entry's exact bytes",
        )
    return seq


def entries(uow: UnitOfWork, actor: Principal, start: int, end: int) -> list[AuditEvent]:
    """Raw leaves [start, end) for replaying the whole log: auditors and operators only."""
    scope = audit_scope(actor)
    if not scope.everything:
        raise _auditors_only("reading raw log entries")
    if not 0 <= start <= end or end - start > PAGE_LIMIT:
        raise BadRequest(
            f"entries {start}..{end} is not a valid page",
            hint=f"ask for at most {PAGE_LIMIT} entries with 0 <= start <= end",
        )
    return list(
        uow.session.scalars(
            select(AuditEvent)
            .where(AuditEvent.seq >= start, AuditEvent.seq < end)
            .order_by(AuditEvent.seq)
        )
    )


def events(
    uow: UnitOfWork,
    actor: Principal,
    filters: EventFilter,
    cursor: int | None = None,
    limit: int = 100,
    *,
    oldest_first: bool = False,
) -> list[AuditEvent]:
    """The events the caller may see that match `filters`: newest first, before seq `cursor`
    (or oldest first, after it)."""
    if not 1 <= limit <= PAGE_LIMIT:
        raise BadRequest(f"limit {limit} is out of range", hint=f"use 1..{PAGE_LIMIT}")
    query = _visible(select(AuditEvent), audit_scope(actor))
    for condition in _conditions(filters):
        query = query.where(condition)
    if oldest_first:
        if cursor is not None:
            query = query.where(AuditEvent.seq > cursor)
        query = query.order_by(AuditEvent.seq)
    else:
        if cursor is not None:
            query = query.where(AuditEvent.seq < cursor)
        query = query.order_by(AuditEvent.seq.desc())
    return list(uow.session.scalars(query.limit(limit)))


def event(uow: UnitOfWork, actor: Principal, seq: int) -> AuditEvent:
    query = _visible(select(AuditEvent).where(AuditEvent.seq == seq), audit_scope(actor))
    found = uow.session.scalar(query)
    if found is None:
        raise NotFound(f"no audit event {seq} that you may see", hint="check the number")
    return found


def _visible(query: Any, scope: AuditScope) -> Any:
    if scope.everything:
        return query
    mine: list[ColumnElement[bool]] = []
    if scope.orgs:
        mine.append(AuditEvent.org.in_(sorted(scope.orgs)))
    if scope.user_id is not None:
        mine += [AuditEvent.user_id == scope.user_id, AuditEvent.actor == f"user:{scope.user_id}"]
    return query.where(or_(*mine))


def _conditions(filters: EventFilter) -> Iterator[Any]:
    if filters.model:
        yield AuditEvent.model == filters.model
    if filters.org:
        yield AuditEvent.org == filters.org
    if filters.actor:
        yield AuditEvent.actor == filters.actor
    if filters.user_id:
        yield or_(
            AuditEvent.user_id == filters.user_id, AuditEvent.actor == f"user:{filters.user_id}"
        )
    if filters.action:
        yield AuditEvent.action == filters.action
    if filters.since:
        yield AuditEvent.created_at >= filters.since
    if filters.until:
        yield AuditEvent.created_at < filters.until


def describe_event(row: AuditEvent) -> AuditEventView:
    """An event as its leaf says it, plus the leaf's exact bytes (base64) and its hash."""
    leaf = bytes(row.leaf)
    event: AuditEventView = json.loads(leaf)  # seq, time, action, actor, subject, details
    event["leaf"] = base64.b64encode(leaf).decode()
    event["leaf_hash"] = bytes(row.leaf_hash).hex()
    return event


@dataclass(frozen=True)
class SelfCheck:
    size: int
    root: bytes
    checkpoint_size: int | None


def self_check(
    uow: UnitOfWork, verifier_key: str | None = None, saved: Mapping[int, bytes] | None = None
) -> SelfCheck:
    """Replay every stored entry against its recorded hash, the log's head, every signed
    checkpoint and the `saved` roots (size -> root) of checkpoints kept elsewhere.

    Raises TamperDetected naming where the log disagrees."""
    checkpoints = list(uow.session.scalars(select(AuditCheckpoint)))
    if verifier_key is not None:
        _verify_notes(checkpoints, verifier_key)
    roots = {c.size: bytes(c.root) for c in checkpoints}
    for size, root in (saved or {}).items():
        if roots.get(size, root) != root:
            raise TamperDetected(
                f"audit log: the checkpoint of size {size} stored here differs from the one "
                "saved before: history was rewritten",
                hint=_TAMPER_HINT,
            )
        roots[size] = root
    replay = LogReplay(roots=roots)
    size, root = head(uow)
    try:
        replay.add_many(_stored_entries(uow, size))
        replayed = replay.finish(size)
    except LogTampered as error:
        raise TamperDetected(f"audit log: {error}", hint=_TAMPER_HINT) from None
    if replayed != root:
        raise TamperDetected(
            f"audit log: the {size} entries hash to {replayed.hex()}, but the log's head "
            f"records the root {root.hex()}",
            hint=_TAMPER_HINT,
        )
    newest = max((c.size for c in checkpoints), default=None)
    return SelfCheck(size=size, root=root, checkpoint_size=newest)


def _stored_entries(uow: UnitOfWork, size: int) -> Iterator[tuple[int, bytes, bytes]]:
    """(seq, leaf, leaf hash) of the stored entries numbered 0..size-1, in order: one query per
    REPLAY_PAGE numbers, each an index range scan of its own (a bound on both sides, so the
    plan stays a range scan even before the table's statistics are gathered); constant
    memory. A missing number is simply absent: the replay names it. On PostgreSQL the rows
    come in the binary format straight from the driver (a third of the time of text rows
    through SQLAlchemy's result objects)."""
    connection = uow.session.connection()
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor(binary=True)  # type: ignore[union-attr]
        for start in range(0, size, REPLAY_PAGE):
            cursor.execute(_PAGE_SQL, (start, min(start + REPLAY_PAGE, size)))
            yield from cursor.fetchall()
        cursor.close()
        return
    for start in range(0, size, REPLAY_PAGE):
        rows = uow.rows(
            select(AuditEvent.seq, AuditEvent.leaf, AuditEvent.leaf_hash)
            .where(AuditEvent.seq >= start, AuditEvent.seq < min(start + REPLAY_PAGE, size))
            .order_by(AuditEvent.seq)
        )
        for seq, leaf, digest in rows:
            yield seq, bytes(leaf), bytes(digest)


_PAGE_SQL = (
    "SELECT seq, leaf, leaf_hash FROM audit_events WHERE seq >= %s AND seq < %s ORDER BY seq"
)


def _verify_notes(checkpoints: list[AuditCheckpoint], verifier_key: str) -> None:
    for checkpoint in checkpoints:
        try:
            parsed = verify_checkpoint(checkpoint.note, verifier_key)
        except CheckpointError as error:
            raise TamperDetected(
                f"audit checkpoint of size {checkpoint.size}: {error}", hint=_TAMPER_HINT
            ) from None
        if parsed.size != checkpoint.size or parsed.root != bytes(checkpoint.root):
            raise TamperDetected(
                f"audit checkpoint of size {checkpoint.size} was changed: its signed note says "
                f"size {parsed.size}",
                hint=_TAMPER_HINT,
            )


_TAMPER_HINT = (
    "do not trust this log: keep the database and the object store's audit/ copies as they are "
    "and compare them with the checkpoints auditors saved"
)


def _auditors_only(what: str) -> Forbidden:
    return Forbidden(
        f"{what} needs the global role auditor",
        hint="an operator grants it: escrow admin role grant USER auditor",
    )


def leaf_hash_of(uow: UnitOfWork, seq: int) -> bytes:
    digest = uow.session.scalar(select(AuditEvent.leaf_hash).where(AuditEvent.seq == seq))
    if digest is None:
        raise NotFound(f"no audit entry {seq}", hint="entries are numbered from 0")
    return bytes(digest)


def verify_deployment(escrow: Escrow, saved_note: str | None = None) -> dict[str, Any]:
    """The operator's self-check: every entry replayed, every checkpoint's signature checked
    with this deployment's key, and (given a checkpoint saved before) a consistency proof."""
    with escrow.uow() as uow:
        key = signing.published_keys(uow, escrow.settings.origin)["checkpoint"]["verifier_key"]
        saved = _saved_checkpoint(saved_note, key) if saved_note is not None else None
        latest_checkpoint(escrow, uow)
        report = self_check(uow, key, {saved.size: saved.root} if saved else None)
        if saved is not None:
            proof = consistency_proof(uow, saved.size, report.size)
            try:
                verify_extension(saved.size, report.size, saved.root, report.root, proof)
            except ProofError as error:
                raise TamperDetected(
                    f"audit log of size {report.size} does not extend the saved checkpoint of "
                    f"size {saved.size}: {error}",
                    hint=_TAMPER_HINT,
                ) from None
    return {
        "size": report.size,
        "root": report.root.hex(),
        "since": saved.size if saved else None,
        "verifier_key": key,
    }


def _saved_checkpoint(note: str, key: str) -> Checkpoint:
    try:
        return verify_checkpoint(note, key)
    except CheckpointError as error:
        raise TamperDetected(
            f"the saved checkpoint does not verify with this deployment's key: {error}",
            hint="check you saved it from this broker; a forged checkpoint proves nothing",
        ) from None
