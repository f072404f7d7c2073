"""Quarantine of a model version: key releases and new requests stop at once, until lifted.

For a leak or a dispute: `escrow admin version quarantine ORG/MODEL@VERSION --reason TEXT`.
The operator alone quarantines and lifts (`version.quarantine`): the lab is bound by its
release agreement, and a quarantine in its hands would hold back a triggered release. While
`Deposit.quarantined_at` is set, `grants.release_key` refuses every release of the version
(a `key.release_refused` event, reason `quarantined`) and `access.create_request` refuses new
requests; grants stay as they are, and releases resume when it is lifted. Both steps are on the
audit log; repeating one changes nothing and says so (`changed: false`, no event).

Who sees what: that a version is quarantined, and since when, is public (the catalogue, the
model list, the agreement page), so that nobody asks in vain; the reason (a leak report, a
dispute) only those who may read the lab's deposits, and operators (`visible_reasons`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from broker.adapters.db.models import Deposit, Model, Organisation
from broker.adapters.db.uow import UnitOfWork
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import Principal
from broker.errors import Conflict, EscrowError, InvalidInput
from broker.services.agreements import find_deposit
from broker.services.views_types import QuarantineView

MAX_REASON = 2000
LIFT_HINT = "an operator lifts it when the matter is settled: escrow admin version lift {name}"


def quarantine(
    uow: UnitOfWork, actor: Principal, model: object, version: object, reason: object
) -> QuarantineView:
    """Stop key releases and requests of the version now; idempotent."""
    authorize(actor, Action.VERSION_QUARANTINE)
    text = _reason(reason)
    deposit = find_deposit(uow, model, version)
    uow.session.refresh(deposit, with_for_update=True)  # one change at a time
    if deposit.quarantined_at is not None:
        return describe(deposit, changed=False)
    deposit.quarantined_at, deposit.quarantine_reason = now(), text
    uow.audit(AuditAction.VERSION_QUARANTINED, actor, _subject(deposit), {"reason": text})
    uow.commit()
    return describe(deposit, changed=True)


def lift(uow: UnitOfWork, actor: Principal, model: object, version: object) -> QuarantineView:
    """Let key releases and requests of the version resume; idempotent."""
    authorize(actor, Action.VERSION_QUARANTINE)
    deposit = find_deposit(uow, model, version)
    uow.session.refresh(deposit, with_for_update=True)
    if deposit.quarantined_at is None:
        return describe(deposit, changed=False)
    details = {"since": _iso(deposit.quarantined_at), "reason": deposit.quarantine_reason}
    deposit.quarantined_at, deposit.quarantine_reason = None, None
    uow.audit(AuditAction.VERSION_QUARANTINE_LIFTED, actor, _subject(deposit), details)
    uow.commit()
    return describe(deposit, changed=True)


def refuse_if_quarantined(deposit: Deposit) -> None:
    """A Conflict for a new request of a quarantined version."""
    if deposit.quarantined_at is None:
        return
    name = f"{deposit.model.full_name}@{deposit.version}"
    raise Conflict(
        f"{name} is quarantined since {_iso(deposit.quarantined_at)} "
        f"({deposit.quarantine_reason}): no request is taken for it now",
        hint=LIFT_HINT.format(name=name) + "; ask again after that",
    )


def refusal(
    grant_id: str, quarantined_at: datetime | None, reason: str | None
) -> tuple[str, str] | None:
    """(reason code, words) refusing a key release under `grant_id` while its version is
    quarantined, else None (what `grants.release_key` asks, from its own rows)."""
    if quarantined_at is None:
        return None
    return "quarantined", (
        f"the model version of grant {grant_id} is quarantined since {_iso(quarantined_at)} "
        f"({reason}): no key of it is released now"
    )


RELEASE_HINT = (
    "wait until the operator lifts the quarantine (escrow admin version lift "
    "ORG/NAME@VERSION), then retry: your grant is unchanged"
)


def public_state(
    uow: UnitOfWork, viewer: Principal | None, model: object, version: object
) -> dict[str, str | None] | None:
    """For a version's public page: None when it is not quarantined, else since when, and the
    reason when `viewer` may read it (`visible_reasons`), else None."""
    deposit = find_deposit(uow, model, version)
    if deposit.quarantined_at is None:
        return None
    reason = visible_reasons(uow, viewer).get(deposit.id)
    return {"quarantined_at": _iso(deposit.quarantined_at), "reason": reason}


def visible_reasons(uow: UnitOfWork, viewer: Principal | None) -> dict[str, str]:
    """deposit id -> quarantine reason, for each quarantined version whose reason `viewer` may
    read: whoever may read its lab's deposits (as the deposit's JSON shows it), and operators."""
    if viewer is None:
        return {}
    rows = uow.session.execute(
        select(Deposit.id, Deposit.quarantine_reason, Organisation.name)
        .join(Model, Model.id == Deposit.model_id)
        .join(Organisation, Organisation.id == Model.org_id)
        .where(Deposit.quarantined_at.is_not(None))
    ).all()
    return {
        deposit_id: reason or ""
        for deposit_id, reason, org in rows
        if _may_read_reason(viewer, org)
    }


def _may_read_reason(viewer: Principal, org: str) -> bool:
    for action, scope in ((Action.DEPOSIT_READ, org), (Action.VERSION_QUARANTINE, None)):
        try:
            authorize(viewer, action, scope)
        except EscrowError:
            continue
        return True
    return False


def describe(deposit: Deposit, *, changed: bool) -> QuarantineView:
    return {
        "model": deposit.model.full_name,
        "version": deposit.version,
        "deposit_id": deposit.id,
        "quarantined": deposit.quarantined_at is not None,
        "quarantined_at": _iso(deposit.quarantined_at) if deposit.quarantined_at else None,
        "reason": deposit.quarantine_reason,
        "changed": changed,
    }


def _reason(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(
            "'reason' is missing: say why the version is quarantined (it goes on the audit log)",
            hint='e.g. escrow admin version quarantine ORG/NAME@VERSION --reason "leak report"',
        )
    text = " ".join(value.split())
    if len(text) > MAX_REASON:
        raise InvalidInput(f"'reason' is longer than {MAX_REASON} characters")
    return text


def _subject(deposit: Deposit) -> dict[str, str]:
    return {
        "deposit": deposit.id,
        "model": deposit.model.full_name,
        "version": deposit.version,
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
