"""Rekey of a model version (a leak): every file re-encrypted under a fresh file key and to a
fresh escrow identity, every grant on the version revoked.

`escrow admin version rekey ORG/MODEL@VERSION --reason TEXT` (the operator, `version.rekey`)
queues it in one transaction: the request (a `Rekey` row holding the new identity, wrapped by
custody, so that a resumed job encrypts every file to the same one), a `rekey` job, the block
on key releases (`Deposit.rekeying_at`: releases are refused, reason `rekeying`, until the
rekey ends) and the revocation of every grant not yet ended, each a `grant.revoked` event with
the reason. The worker's part is in `rekey_run.py`. A rekey that fails for good leaves the old
objects serving (the deposit is never half-switched), lifts the block, and says why; the
grants stay revoked.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime

from sqlalchemy import func, select

from broker import age
from broker.adapters.db.models import Deposit, Grant, Job, Rekey, RekeyFile, User
from broker.adapters.db.uow import UnitOfWork
from broker.auditlog.leaf import canonical_json
from broker.container import Escrow
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.principals import SYSTEM, Principal
from broker.errors import Conflict, EscrowError, InvalidInput, NotFound, ObjectMissing
from broker.services import copies, signing
from broker.services.agreements import find_deposit
from broker.services.deposits import SEALED, deposit_prefix, identity_context, identity_object
from broker.services.people import audit_subject
from broker.services.verification import manifest_of
from broker.services.views_types import RekeyView

log = logging.getLogger(__name__)
MAX_REASON = 2000
OPEN_STATES = ("queued", "running", "switched")
REKEY_HINT = (
    "the version is being re-encrypted under new keys after a leak, and every grant on it was "
    "revoked: ask for access again (escrow request ORG/NAME@VERSION); a new grant fetches the "
    "re-keyed files once the rekey is done"
)


def request_rekey(
    escrow: Escrow, uow: UnitOfWork, actor: Principal, model: object, version: object,
    reason: object, *, keep_lab_recipients: bool = True,
) -> RekeyView:
    """Queue the rekey of a sealed version, block its key releases and revoke its grants, in
    one transaction; a rekey already under way is shown, not queued again. The new headers go
    to the lab's own recipients too unless `keep_lab_recipients` is false (a leak through a
    lab key)."""
    authorize(actor, Action.VERSION_REKEY)
    text = _reason(reason)
    deposit = find_deposit(uow, model, version)
    uow.session.refresh(deposit, with_for_update=True)  # one change of the deposit at a time
    name = f"{deposit.model.full_name}@{deposit.version}"
    if deposit.state != SEALED:
        raise Conflict(
            f"{name} is {deposit.state}, not sealed: only a sealed version is re-keyed",
            hint="a deposit that is not sealed releases no key; fail or finish it first",
        )
    running = open_rekey(uow, deposit.id)
    if running is not None:
        return describe(uow, deposit, running, changed=False)
    classical = deposit.recipient_type == "x25519"  # the kind the lab chose at deposit
    identity = age.generate_x25519_identity() if classical else age.generate_hybrid_identity()
    wrapped = escrow.custody.wrap(identity.encode().encode(), identity_context(deposit.id))
    last = uow.session.scalar(
        select(func.max(Rekey.generation)).where(Rekey.deposit_id == deposit.id)
    )
    # Never the names of a failed attempt's objects: each attempt writes where nothing was.
    generation = max(deposit.generation, last or 0) + 1
    rekey = Rekey(
        deposit_id=deposit.id, generation=generation, reason=text, requested_by=actor.id,
        state="queued", recipient=str(identity.to_recipient()), wrapped_identity=wrapped,
        grants_revoked=0, old_objects_deleted=0, old_objects_locked=0,
        keep_lab_recipients=keep_lab_recipients,
    )
    uow.session.add(rekey)
    uow.session.flush()
    # One job for the deposit, not one per file: the switch must wait for every file, and
    # the files done are recorded (rekey_files) so that a resumed job skips them.
    uow.session.add(Job(kind="rekey", deposit_id=deposit.id, state="queued"))
    deposit.rekeying_at = now()
    rekey.grants_revoked = _revoke_grants(uow, actor, deposit, rekey, text)
    uow.audit(
        AuditAction.VERSION_REKEY_REQUESTED, actor, subject(deposit),
        {"reason": text, "rekey": rekey.id, "generation": generation,
         "recipient": rekey.recipient, "grants_revoked": rekey.grants_revoked,
         "lab_recipients": "kept" if keep_lab_recipients else "dropped"},
    )
    uow.commit()
    return describe(uow, deposit, rekey, changed=True)


def _revoke_grants(
    uow: UnitOfWork, actor: Principal, deposit: Deposit, rekey: Rekey, reason: str
) -> int:
    """Revoke every grant of the version that has not ended, as `grants.revoke` does (each
    on the log, with the rekey's reason)."""
    moment = now()
    grants = uow.session.scalars(
        select(Grant)
        .where(Grant.deposit_id == deposit.id, Grant.revoked_at.is_(None),
               Grant.expires_at > moment)
        .order_by(Grant.created_at, Grant.id)
        .with_for_update()
    ).all()
    for grant in grants:
        grant.revoked_at, grant.revoked_by = moment, actor.id
        researcher = uow.session.get(User, grant.user_id)
        assert researcher is not None  # a foreign key
        uow.audit(
            AuditAction.GRANT_REVOKED, actor,
            {**audit_subject(researcher), "grant": grant.id, "deposit": deposit.id},
            {"expires_at": _iso(grant.expires_at), "reason": reason, "rekey": rekey.id},
        )
    return len(grants)


def show(uow: UnitOfWork, actor: Principal, model: object, version: object) -> RekeyView:
    """The version's newest rekey."""
    authorize(actor, Action.VERSION_REKEY)
    deposit = find_deposit(uow, model, version)
    rekey = uow.session.scalar(
        select(Rekey).where(Rekey.deposit_id == deposit.id).order_by(Rekey.id.desc()).limit(1)
    )
    if rekey is None:
        raise NotFound(
            f"{deposit.model.full_name}@{deposit.version} was never re-keyed",
            hint="escrow admin version rekey ORG/NAME@VERSION --reason TEXT queues one",
        )
    return describe(uow, deposit, rekey, changed=False)


def open_rekey(uow: UnitOfWork, deposit_id: str) -> Rekey | None:
    return uow.session.scalar(
        select(Rekey).where(Rekey.deposit_id == deposit_id, Rekey.state.in_(OPEN_STATES))
        .order_by(Rekey.id.desc()).limit(1)
    )


def files_done(uow: UnitOfWork, rekey_id: int) -> dict[int, bytes]:
    """The files a rekey re-encrypted and checked: their new escrow headers, by number."""
    rows = uow.session.scalars(select(RekeyFile).where(RekeyFile.rekey_id == rekey_id))
    return {row.file_idx: row.header for row in rows}


def describe(uow: UnitOfWork, deposit: Deposit, rekey: Rekey, *, changed: bool) -> RekeyView:
    job = uow.session.scalar(
        select(Job).where(Job.deposit_id == deposit.id, Job.kind == "rekey",
                          Job.created_at >= rekey.created_at).order_by(Job.id).limit(1)
    )
    return {
        "model": deposit.model.full_name,
        "version": deposit.version,
        "deposit_id": deposit.id,
        "rekey_id": rekey.id,
        "state": rekey.state,
        "reason": rekey.reason,
        "requested_by": rekey.requested_by,
        "requested_at": _iso(rekey.created_at),
        "finished_at": _iso(rekey.finished_at) if rekey.finished_at else None,
        "error": rekey.error,
        "generation": rekey.generation,
        "recipient": rekey.recipient,
        "files_done": len(files_done(uow, rekey.id)),
        "files": len(deposit.files),
        "grants_revoked": rekey.grants_revoked,
        "old_objects_deleted": rekey.old_objects_deleted,
        "old_objects_locked": rekey.old_objects_locked,
        "keep_lab_recipients": rekey.keep_lab_recipients,
        "job": f"job {job.id}: {job.state}, {job.attempts} attempt(s)" if job else None,
        "changed": changed,
    }


def refusal(grant_id: str, rekeying_at: datetime | None) -> tuple[str, str] | None:
    """(reason code, words) refusing a key release while the grant's version is re-keyed."""
    if rekeying_at is None:
        return None
    return "rekeying", (
        f"the model version of grant {grant_id} is being re-keyed since {_iso(rekeying_at)}: "
        "no key of it is released until the new keys serve"
    )


# --- when it fails for good ---------------------------------------------------------------------


def fail_rekey(
    escrow: Escrow, uow: UnitOfWork, deposit_id: str, reason: str, job_id: int | None = None
) -> None:
    """End the deposit's open rekey after its job gave up. Before the switch: failed, the old
    objects still serving, the new ones removed, the bucket's copies (manifest, identity) made
    the database's again, the block lifted. After it (only the removal of the old objects
    failed): done, saying what is left. The caller has locked the deposit."""
    rekey = open_rekey(uow, deposit_id)
    deposit = uow.session.get(Deposit, deposit_id)
    if rekey is None or deposit is None:
        return
    rekey.finished_at = now()
    if rekey.state == "switched":
        rekey.state, rekey.error = "done", f"old objects not all removed: {reason}"
        return
    rekey.state, rekey.error = "failed", reason
    deposit.rekeying_at = None
    remove_generation(escrow, deposit_id, rekey.generation)
    write_bucket_copies(escrow, uow, deposit)
    uow.audit(
        AuditAction.VERSION_REKEY_FAILED, SYSTEM, subject(deposit),
        {"rekey": rekey.id, "reason": reason, **({"job": job_id} if job_id else {})},
    )


def remove_generation(escrow: Escrow, deposit_id: str, generation: int) -> int:
    """Remove the objects a rekey wrote under `generation` (not serving): best effort."""
    prefix = deposit_prefix(deposit_id) + "files/"
    removed = 0
    try:
        for key in escrow.store.list_keys(prefix):
            if f".r{generation}." in key.removeprefix(prefix):
                escrow.store.delete(key)
                removed += 1
    except EscrowError as error:
        log.warning("could not remove the objects of a failed rekey of %s: %s", deposit_id,
                    error.message)
    return removed


def write_bucket_copies(escrow: Escrow, uow: UnitOfWork, deposit: Deposit) -> bool:
    """Make the bucket's manifest (signed) and identity.wrapped say what the deposit's row
    says, so that recovery restores it; Object Lock on them as at sealing. Whether anything
    was written (an unchanged copy is left alone)."""
    prefix = deposit_prefix(deposit.id)
    manifest = canonical_json(manifest_of(deposit))
    if _stored(escrow, prefix + "manifest.json") == manifest and _stored(
        escrow, identity_object(deposit.id)
    ) == deposit.wrapped_identity:
        return False
    key_id, signature = signing.sign(uow, escrow.custody, "manifest", manifest)
    escrow.store.put_bytes(identity_object(deposit.id), deposit.wrapped_identity)
    escrow.store.put_bytes(prefix + "manifest.json", manifest)
    escrow.store.put_bytes(
        prefix + "manifest.sig",
        canonical_json({"algorithm": "ed25519", "key_id": key_id,
                        "signature": base64.b64encode(signature).decode()}),
    )
    copies.lock(escrow, escrow.store, [prefix + "manifest.json", prefix + "manifest.sig",
                                       identity_object(deposit.id)])
    return True


def _stored(escrow: Escrow, key: str) -> bytes | None:
    try:
        return escrow.store.get_bytes(key)
    except ObjectMissing:
        return None


def subject(deposit: Deposit) -> dict[str, str]:
    return {"deposit": deposit.id, "model": deposit.model.full_name, "version": deposit.version}


def _reason(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(
            "'reason' is missing: say why the version is re-keyed (it goes on the audit log "
            "and with each grant revoked)",
            hint='e.g. escrow admin version rekey ORG/NAME@VERSION --reason "leak report 42"',
        )
    text = " ".join(value.split())
    if len(text) > MAX_REASON:
        raise InvalidInput(f"'reason' is longer than {MAX_REASON} characters")
    return text


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
