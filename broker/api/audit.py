"""JSON API of the audit log (translate only).

Checkpoints and proofs are public: they are hashes, and anyone holding a checkpoint must be able
to check the log still extends it. Events are shown to whoever may see them; raw entries, for
replaying the whole log, to auditors.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, request

from broker.errors import BadRequest
from broker.http.common import caller, escrow
from broker.http.openapi import INTEGER, STRING, Schema, operation
from broker.services import audit as service
from broker.services.audit_export import EXPORT_FORMATS, export_lines, parse_filter
from broker.services.views_types import (
    AuditEventPage,
    AuditEventView,
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    RawEntries,
)

bp = Blueprint("audit", __name__, url_prefix="/api/v1/audit")

FILTERS = [
    {"name": name, "in": "query", "required": False, "schema": STRING}
    for name in ("model", "org", "actor", "action", "since", "until", "before", "limit")
]


def _query(
    names: tuple[str, ...],
    summary: str,
    ok: Schema,
    auth: bool = False,
    also: dict[str, Schema] | None = None,
) -> dict:
    spec = operation(summary, ok, auth=auth, also=also)
    spec["parameters"] = [
        {"name": n, "in": "query", "required": False, "schema": STRING} for n in names
    ]
    return spec


def _filtered(
    summary: str,
    ok: Schema,
    content_type: str = "application/json",
    also: dict[str, Schema] | None = None,
) -> dict:
    spec = operation(summary, ok, content_type=content_type, also=also)
    spec["parameters"] = FILTERS
    return spec


OPENAPI = {
    "/api/v1/audit/checkpoint": {
        "get": _query(
            ("size",),
            "the newest signed checkpoint (C2SP tlog-checkpoint note as text/plain, or "
            "{size, note} for Accept: application/json), or the one signed at ?size=",
            Checkpoint,
            also={"text/plain": STRING},
        )
    },
    "/api/v1/audit/consistency": {
        "get": _query(
            ("first", "second"),
            "RFC 9162 consistency proof that the log at `second` extends the log at `first`",
            ConsistencyProof,
        )
    },
    "/api/v1/audit/inclusion": {
        "get": _query(
            ("seq", "leaf_hash", "size"),
            "RFC 9162 inclusion proof of one entry (by seq or hex leaf hash) in the log at "
            "`size` (default: the newest checkpoint)",
            InclusionProof,
        )
    },
    "/api/v1/audit/entries": {
        "get": _query(
            ("start", "end"),
            "raw entries [start, end), at most 1000: base64 of exactly the bytes hashed (auditors)",
            RawEntries,
            auth=True,
        )
    },
    "/api/v1/audit/events": {
        "get": _filtered(
            "the events you may see, newest first, filtered; page with ?before=<next_before>",
            AuditEventPage,
        )
    },
    "/api/v1/audit/events/{seq}": {
        "get": operation("one event you may see", AuditEventView),
        "parameters": [{"name": "seq", "in": "path", "required": True, "schema": INTEGER}],
    },
    "/api/v1/audit/export": {
        "get": _filtered(
            "the events you may see as ?format=jsonl (one leaf per line) or csv",
            STRING,
            content_type="application/x-ndjson",
            also={"text/csv": STRING},
        )
    },
}


def _int_arg(name: str, default: int | None = None) -> int | None:
    value = request.args.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(
            f"?{name}={value!r} is not a whole number", hint=f"give {name} as digits"
        ) from None


def _b64(values: list[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


@bp.get("/checkpoint")
def checkpoint() -> Response:
    size = _int_arg("size")
    with escrow().uow() as uow:
        found = (
            service.latest_checkpoint(escrow(), uow)
            if size is None
            else service.checkpoint_at(uow, size)
        )
        if request.accept_mimetypes.best_match(["text/plain", "application/json"]) == "text/plain":
            return Response(found.note, mimetype="text/plain")
        answer: Checkpoint = {"size": found.size, "note": found.note}
        return jsonify(answer)


@bp.get("/consistency")
def consistency() -> Response:
    first, second = _int_arg("first", 0), _int_arg("second")
    with escrow().uow() as uow:
        if second is None:
            second = service.latest_checkpoint(escrow(), uow).size
        assert first is not None
        proof = service.consistency_proof(uow, first, second)
        answer: ConsistencyProof = {"first": first, "second": second, "proof": _b64(proof)}
        return jsonify(answer)


@bp.get("/inclusion")
def inclusion() -> Response:
    with escrow().uow() as uow:
        seq = _int_arg("seq")
        if seq is None:
            seq = service.seq_of_leaf_hash(uow, _hex_arg("leaf_hash"))
        latest = service.latest_checkpoint(escrow(), uow, covering=seq + 1)
        size = _int_arg("size", latest.size)
        assert size is not None
        proof = service.inclusion_proof(uow, seq, size)
        note = service.checkpoint_at(uow, size).note if size != latest.size else latest.note
        answer: InclusionProof = {
            "seq": seq,
            "size": size,
            "leaf_hash": service.leaf_hash_of(uow, seq).hex(),
            "proof": _b64(proof),
            "checkpoint": note,
        }
        return jsonify(answer)


def _hex_arg(name: str) -> bytes:
    value = request.args.get(name, "")
    try:
        digest = bytes.fromhex(value)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise BadRequest(
            f"?{name}= must be 64 hex digits (a SHA-256), or give ?seq=",
            hint="the leaf hash is SHA-256 of 0x00 followed by the entry's bytes",
        )
    return digest


@bp.get("/entries")
def entries() -> Response:
    start = _int_arg("start", 0)
    assert start is not None
    end = _int_arg("end", start + service.PAGE_LIMIT)
    assert end is not None
    with escrow().uow() as uow:
        rows = service.entries(uow, caller(), start, end)
        answer: RawEntries = {
            "entries": [
                {
                    "seq": row.seq,
                    "leaf": base64.b64encode(bytes(row.leaf)).decode(),
                    "leaf_hash": bytes(row.leaf_hash).hex(),
                }
                for row in rows
            ]
        }
        return jsonify(answer)


@bp.get("/events")
def events() -> Response:
    limit = _int_arg("limit", 100)
    assert limit is not None
    principal = caller()
    with escrow().uow() as uow:
        filters = parse_filter(uow, request.args)
        rows = service.events(uow, principal, filters, _int_arg("before"), limit)
        next_before = rows[-1].seq if len(rows) == limit else None
        answer: AuditEventPage = {
            "events": [service.describe_event(r) for r in rows],
            "next_before": next_before,
        }
        return jsonify(answer)


@bp.get("/events/<int:seq>")
def show_event(seq: int) -> Response:
    with escrow().uow() as uow:
        return jsonify(service.describe_event(service.event(uow, caller(), seq)))


@bp.get("/export")
def export() -> Response:
    kind = request.args.get("format", "jsonl")
    if kind not in EXPORT_FORMATS:
        raise BadRequest(
            f"?format={kind!r} is not an export format", hint="use format=jsonl or format=csv"
        )
    principal = caller()
    with escrow().uow() as uow:
        filters = parse_filter(uow, request.args)
        service.events(uow, principal, filters, limit=1)  # refuse before streaming starts
    lines: Iterator[str] = export_lines(escrow(), principal, filters, kind)
    mimetype, suffix = EXPORT_FORMATS[kind]
    return Response(
        lines,
        mimetype=mimetype,
        headers={"Content-Disposition": f"attachment; filename=audit-log.{suffix}"},
    )
