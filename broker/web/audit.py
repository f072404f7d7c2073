"""The auditor's pages: the log with filters and paging, one event, the newest signed
checkpoint, the broker's self-check (optionally against a checkpoint saved before), and export
links to `/api/v1/audit/export`.

Who may read the whole log is decided by the domain (`audit_scope`); these pages are for those
it lets see everything (auditors, and operators), and answer 403 naming the role to others.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from flask import render_template, request

from broker.domain.access import audit_scope
from broker.domain.principals import Principal
from broker.errors import EscrowError, TamperDetected
from broker.http.common import escrow
from broker.services import audit as service
from broker.services.audit_export import parse_filter
from broker.web.common import RoleRequired, page_blueprint, page_doc, person

bp = page_blueprint("web_audit", __name__)

PAGE_SIZE = 50
FILTERS = ("model", "org", "actor", "action", "since", "until")

OPENAPI = {
    "/audit": page_doc(
        query=(*FILTERS, "before"), get="the audit log, filtered, newest first (auditors)"
    ),
    "/audit/events/{seq}": page_doc(
        "seq", get="one audit event, its exact leaf and hash (auditors)"
    ),
    "/audit/verify": page_doc(
        post_status="200",
        get="the self-check form (auditors)",
        post="replay the log and check every signed checkpoint, optionally against a "
        "checkpoint saved before (form: saved_checkpoint, csrf_token); shows the result",
    ),
}


def auditor() -> Principal:
    """The person logged in, if the domain lets them read the whole log; else the 403 page."""
    actor = person()
    if not audit_scope(actor).everything:
        raise RoleRequired(
            "the audit pages show the whole log, which only auditors and operators may read",
            hint="an operator grants the role: escrow admin role grant YOUR_EMAIL auditor "
            "(an organisation's admins read their events with `escrow audit show`)",
            needed="the global role auditor",
        )
    return actor


@bp.get("/audit")
def log() -> tuple[str, int]:
    actor = auditor()
    typed = {name: request.args.get(name, "").strip() for name in FILTERS}
    before = _before(request.args.get("before"))
    problem, rows = None, []
    query = {k: v for k, v in typed.items() if v}
    with escrow().uow() as uow:
        try:
            filters = parse_filter(uow, typed)
            rows = service.events(uow, actor, filters, before, PAGE_SIZE)
        except EscrowError as error:  # a typo in a filter: say so above the form
            problem = error
        page = render_template(
            "audit/log.html",
            events=[_event(row) for row in rows],
            typed=typed,
            problem=problem,
            checkpoint=service.latest_checkpoint(escrow(), uow),
            older=urlencode({**query, "before": rows[-1].seq}) if len(rows) == PAGE_SIZE else None,
            newest=urlencode(query),
            paged=before is not None,
            export_query=urlencode(query),
        )
    return page, problem.status if problem else 200


@bp.get("/audit/events/<int:seq>")
def event(seq: int) -> str:
    actor = auditor()
    with escrow().uow() as uow:
        found = _event(service.event(uow, actor, seq))
    return render_template("audit/event.html", event=found)


@bp.get("/audit/verify")
def verify_form() -> str:
    auditor()
    return _verify_page(None, None, "")[0]


@bp.post("/audit/verify")
def verify() -> tuple[str, int]:
    auditor()
    # Browsers send a textarea's lines ending in CRLF; a signed note's lines end in LF.
    saved = request.form.get("saved_checkpoint", "").replace("\r\n", "\n").strip()
    try:
        result = service.verify_deployment(escrow(), saved + "\n" if saved else None)
    except TamperDetected as tampered:
        return _verify_page(None, tampered, saved)
    return _verify_page(result, None, saved)


def _verify_page(
    result: dict[str, Any] | None, problem: TamperDetected | None, saved: str
) -> tuple[str, int]:
    page = render_template("audit/verify.html", result=result, problem=problem, saved=saved,
                           broker=escrow().settings.public_url)
    return page, problem.status if problem else 200


def _event(row: Any) -> dict[str, Any]:
    """An event as described by the service, with its parts ready to show."""
    described = service.describe_event(row)
    actor = described.get("actor", {})
    return {
        **described,
        "who": f"{actor.get('kind')}:{actor.get('id')}",
        "subject_text": json.dumps(described.get("subject", {}), indent=2, sort_keys=True),
        "details_text": json.dumps(described.get("details", {}), indent=2, sort_keys=True),
        "leaf_text": bytes(row.leaf).decode("utf-8", "replace"),
    }


def _before(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None
