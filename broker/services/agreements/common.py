"""Finding a version and its agreement, the check-ins and votes counted, what the rooms share."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from broker.adapters.db.models import (
    AgreementCheckin,
    AgreementVote,
    Deposit,
    Model,
    Organisation,
    ReleaseAgreement,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.domain import sshsig
from broker.domain.names import check_version, split_model_name
from broker.domain.principals import Principal, PrincipalKind
from broker.errors import Conflict, InvalidInput, NotFound
from broker.policy.agreement import Agreement, load_agreement
from broker.policy.loader import PolicyLibrary

NAMESPACE = sshsig.AGREEMENT_NAMESPACE
AGREEMENTS_DIR = "agreements/"
MAX_TEXT = 64 * 1024


class AgreementBinds(Conflict):
    """A sealed version's agreement cannot be changed that way (the refusal is logged)."""

    title = "release agreement binds"


def find_deposit(uow: UnitOfWork, model: object, version: object) -> Deposit:
    """The deposit of ORG/NAME@VERSION in any state, or a 404."""
    if not isinstance(model, str) or not isinstance(version, str) or not version:
        raise InvalidInput(
            "name the version as ORG/NAME@VERSION", hint="e.g. acme-ai/gpt-small@2024-05"
        )
    org_of, short = split_model_name(model)
    check_version(version)
    deposit = uow.session.scalar(
        select(Deposit)
        .join(Model)
        .join(Organisation)
        .where(Organisation.name == org_of, Model.name == short, Deposit.version == version)
    )
    if deposit is None:
        raise NotFound(
            f"version {version} of {model} does not exist",
            hint=f"deposit it first: escrow deposit DIR --model {model} --version {version}",
        )
    return deposit


def current(uow: UnitOfWork, deposit_id: str, *, lock: bool = False) -> ReleaseAgreement | None:
    """The agreement in force for a deposit (its highest number), if any."""
    query = (
        select(ReleaseAgreement)
        .where(ReleaseAgreement.deposit_id == deposit_id)
        .order_by(ReleaseAgreement.number.desc())
        .limit(1)
    )
    return uow.session.scalar(query.with_for_update() if lock else query)


def required(uow: UnitOfWork, deposit: Deposit, *, lock: bool = False) -> ReleaseAgreement:
    row = current(uow, deposit.id, lock=lock)
    if row is None:
        name = name_of(deposit)
        raise NotFound(
            f"{name} has no release agreement",
            hint=f"its lab's admin attaches one: escrow agreement attach {name} FILE",
        )
    return row


def parsed(row: ReleaseAgreement) -> Agreement:
    return load_agreement(row.text.encode("utf-8"), Path(f"agreement-{row.number}.yaml"))


def name_of(deposit: Deposit) -> str:
    return f"{deposit.model.full_name}@{deposit.version}"


def org_of(deposit: Deposit) -> str:
    return deposit.model.organisation.name


def subject_of(deposit: Deposit) -> dict[str, str]:
    return {"deposit": deposit.id, "model": deposit.model.full_name, "version": deposit.version}


_LIBRARIES: dict[Path, PolicyLibrary] = {}


def policy_library(policy_dir: Path) -> PolicyLibrary:
    return _LIBRARIES.setdefault(Path(policy_dir), PolicyLibrary(Path(policy_dir)))


def last_checkin(uow: UnitOfWork, org_id: int) -> datetime | None:
    return uow.session.scalar(
        select(func.max(AgreementCheckin.created_at)).where(AgreementCheckin.org_id == org_id)
    )


def active_votes(uow: UnitOfWork, agreement_id: int) -> list[AgreementVote]:
    return list(
        uow.session.scalars(
            select(AgreementVote)
            .where(AgreementVote.agreement_id == agreement_id)
            .order_by(AgreementVote.created_at, AgreementVote.id)
        )
    )


def trustee_email(uow: UnitOfWork, actor: Principal, row: ReleaseAgreement) -> str | None:
    """The logged-in person's verified e-mail address if the agreement `row` names it among
    its trustees, else None: who a trustee is, for votes and for a trustee's amendment."""
    found = verified_email(uow, actor)
    return found[1] if found and found[1] in parsed(row).trustees else None


def verified_email(uow: UnitOfWork, actor: Principal) -> tuple[User, str] | None:
    """The person acting and their verified e-mail address ("" if not verified); None for
    a service token, an operator or the worker, or a person no longer there."""
    if actor.kind != PrincipalKind.USER:
        return None
    user = uow.session.get(User, int(actor.id))
    if user is None:
        return None
    profile = user.profile
    return user, (profile.email or "").lower() if profile and profile.email_verified else ""
