"""Attaching, amending, removing a version's agreement (a sealed one binds); its bucket copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import select

from broker.adapters.db.models import Deposit, ReleaseAgreement
from broker.adapters.db.uow import UnitOfWork
from broker.container import Escrow
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import Principal
from broker.errors import EscrowError, Forbidden, InvalidInput
from broker.policy.agreement import Agreement, load_agreement
from broker.policy.agreement_rules import evaluate_amendment
from broker.services.agreements.common import (
    AGREEMENTS_DIR,
    MAX_TEXT,
    AgreementBinds,
    current,
    find_deposit,
    name_of,
    org_of,
    parsed,
    policy_library,
    required,
    subject_of,
    trustee_email,
)
from broker.services.agreements.triggers import gather_facts
from broker.services.deposits import SEALED, deposit_prefix


def attach(
    escrow: Escrow,
    uow: UnitOfWork,
    actor: Principal,
    model: object,
    version: object,
    text: object,
) -> tuple[ReleaseAgreement, str]:
    """Attach (or, before sealing, replace; after sealing, amend) a version's agreement.
    Returns the agreement in force and what happened: attached, replaced, amended, unchanged."""
    deposit = find_deposit(uow, model, version)
    _authorize_change(uow, actor, deposit, "amend")
    raw = _text(text)
    agreement = load_agreement(raw, Path("agreement.yaml"))
    _check_fits(escrow, agreement, deposit)
    existing = current(uow, deposit.id, lock=True)
    if existing is not None and existing.sha256 == agreement.sha256:
        return existing, "unchanged"
    outcome = "attached" if existing is None else "replaced"
    if deposit.state == SEALED and existing is not None:
        facts = gather_facts(uow, deposit, existing, proposal=agreement.sha256, actor=actor)
        decision = evaluate_amendment(parsed(existing), facts)
        if not decision.allowed:
            _refuse(
                uow,
                actor,
                deposit,
                existing,
                "amend",
                f"its amendment rule is not met: still missing {'; '.join(decision.missing)}",
                hint="the trustees vote for this exact text (escrow agreement vote "
                f"{name_of(deposit)} --amendment FILE), then the lab's admin or a trustee "
                "attaches it again, as the rule asks",
                extra={"proposal_sha256": agreement.sha256, "missing": list(decision.missing)},
            )
        outcome = "amended"
    row = ReleaseAgreement(
        deposit_id=deposit.id,
        number=(existing.number + 1) if existing else 1,
        text=raw.decode("utf-8"),
        sha256=agreement.sha256,
        created_by=f"{actor.kind}:{actor.id}",
        created_at=now(),
    )
    uow.session.add(row)
    uow.session.flush()
    _store(escrow, deposit, row)
    details: dict[str, Any] = {"number": row.number, "sha256": row.sha256, "text": row.text}
    if existing is not None:
        details["replaces"] = {"number": existing.number, "sha256": existing.sha256}
    action = (
        AuditAction.AGREEMENT_AMENDED if outcome == "amended" else AuditAction.AGREEMENT_ATTACHED
    )
    uow.audit(action, actor, subject_of(deposit), details)
    uow.commit()
    return row, outcome


def remove(
    escrow: Escrow, uow: UnitOfWork, actor: Principal, model: object, version: object
) -> None:
    """Remove a version's agreement: only before it is sealed. After, refused and logged."""
    deposit = find_deposit(uow, model, version)
    _authorize_change(uow, actor, deposit, "remove")
    existing = required(uow, deposit, lock=True)
    if deposit.state == SEALED:
        _refuse(
            uow,
            actor,
            deposit,
            existing,
            "remove",
            "a sealed version's agreement is never removed",
            hint=f"replace it by an amendment its own rule allows: escrow agreement attach "
            f"{name_of(deposit)} FILE",
        )
    for row in uow.session.scalars(
        select(ReleaseAgreement).where(ReleaseAgreement.deposit_id == deposit.id)
    ):
        uow.session.delete(row)
    uow.audit(
        AuditAction.AGREEMENT_REMOVED, actor, subject_of(deposit), {"sha256": existing.sha256}
    )
    uow.commit()
    for key in escrow.store.list_keys(deposit_prefix(deposit.id) + AGREEMENTS_DIR):
        escrow.store.delete(key)


def _authorize_change(uow: UnitOfWork, actor: Principal, deposit: Deposit, attempt: str) -> None:
    """Whether `actor` may attach (before the seal) or amend (after it) the version's agreement,
    as `authorize` decides: before the seal the lab (its depositor or admin) only; after it the
    lab's admin, or a trustee the agreement in force names (a lab that has vanished cannot
    attach the amendment its trustees voted for), the agreement's own amendment rule deciding
    then. A member of the lab's organisation refused a sealed agreement's change (a depositor, a
    reviewer) is logged as the admin's refused changes are."""
    sealed = deposit.state == SEALED
    org = org_of(deposit)
    try:
        authorize(actor, Action.AGREEMENT_AMEND if sealed else Action.AGREEMENT_ATTACH, org)
    except Forbidden as refused:
        # locked as `attach` reads it next: the trustees checked are those of the agreement
        # whose rule then decides
        existing = current(uow, deposit.id, lock=True) if sealed else None
        if existing is not None and trustee_email(uow, actor, existing) is not None:
            authorize(actor, Action.AGREEMENT_AMEND_AS_TRUSTEE)
            return
        roles = actor.roles_in(org)
        # Only members are logged: someone with no role in the organisation gets the plain 403
        # and no audit event, so that strangers cannot fill the log with refusals.
        if existing is None or not roles:
            raise
        _refuse(
            uow,
            actor,
            deposit,
            existing,
            attempt,
            f"the role {' and '.join(roles)} in {org!r} may not change it ({refused.message})",
            hint=f"only an admin of {org!r}, or a trustee the agreement names, proposes a "
            "change, and only by an amendment its own rule allows: escrow agreement attach "
            f"{name_of(deposit)} FILE",
            extra={"roles": list(roles)},
            error=Forbidden,
        )


def _refuse(
    uow: UnitOfWork,
    actor: Principal,
    deposit: Deposit,
    existing: ReleaseAgreement,
    attempt: str,
    why: str,
    *,
    hint: str,
    extra: dict[str, Any] | None = None,
    error: type[EscrowError] = AgreementBinds,
) -> NoReturn:
    """Log the refused change and why (committed: a refusal leaves its trace), then raise."""
    uow.audit(
        AuditAction.AGREEMENT_CHANGE_REFUSED,
        actor,
        subject_of(deposit),
        {
            "attempt": attempt,
            "number": existing.number,
            "sha256": existing.sha256,
            "reason": why,
            **(extra or {}),
        },
    )
    uow.commit()
    raise error(
        f"{name_of(deposit)} is sealed under release agreement #{existing.number} "
        f"(sha256 {existing.sha256[:16]}…): {why}; the attempt is on the audit log",
        hint=hint,
    )


def _text(text: object) -> bytes:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(
            "'text' is missing: send the agreement file's text",
            hint="escrow agreement attach ORG/NAME@VERSION FILE sends it",
        )
    raw = text.encode("utf-8")
    if len(raw) > MAX_TEXT:
        raise InvalidInput(f"the agreement is {len(raw)} bytes, more than {MAX_TEXT}", hint="")
    return raw


def _check_fits(escrow: Escrow, agreement: Agreement, deposit: Deposit) -> None:
    """The agreement names this model, and each policy it unlocks is one of the organisation."""
    if agreement.model != deposit.model.full_name:
        raise InvalidInput(
            f"the agreement is for {agreement.model}, not {deposit.model.full_name}",
            hint="fix its `model:` line, or attach it to a version of its model",
        )
    if not agreement.policies():
        return
    policies = policy_library(escrow.settings.policy_dir)
    for policy_id in agreement.policies():
        policy = policies.current().get(policy_id)  # NotFound names the policy
        if policy.organisation != org_of(deposit):
            raise InvalidInput(
                f"the agreement unlocks policy {policy_id}, which belongs to "
                f"{policy.organisation}, not {org_of(deposit)}",
                hint="unlock a policy of the model's own organisation, or public",
            )


def _store(escrow: Escrow, deposit: Deposit, row: ReleaseAgreement) -> None:
    """The text and what identifies it, beside the deposit in the bucket (recovery reads them)."""
    prefix = deposit_prefix(deposit.id) + AGREEMENTS_DIR + f"{row.number:06d}"
    escrow.store.put_bytes(prefix + ".yaml", row.text.encode("utf-8"))
    escrow.store.put_bytes(prefix + ".json", json.dumps(describe_row(row), sort_keys=True).encode())


def describe_row(row: ReleaseAgreement) -> dict[str, Any]:
    return {
        "number": row.number,
        "sha256": row.sha256,
        "created_at": row.created_at.isoformat(),
        "created_by": row.created_by,
    }
