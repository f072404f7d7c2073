"""Studies of live use, with consent (broker.domain.studies): registration and the lab's
decision, a person's consent and its withdrawal, the study's team (its owner and the members
the owner adds), and the views the API and pages show. Capture of consented exchanges and the
team's access to them: broker.services.study_captures.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from broker.adapters.db.models import (
    Model,
    Organisation,
    Study,
    StudyConsent,
    StudyMember,
    User,
)
from broker.adapters.db.uow import UnitOfWork
from broker.domain import studies as domain
from broker.domain.access import Action, authorize
from broker.domain.clock import now
from broker.domain.events import AuditAction
from broker.domain.names import split_model_name
from broker.domain.principals import Principal, PrincipalKind
from broker.errors import Conflict, InvalidInput, NotFound
from broker.services.access.requests import find_sealed_deposit
from broker.services.grants import iso
from broker.services.keys import canonical_recipient, parse_key
from broker.services.people import audit_subject, get_user
from broker.services.views_types import (
    StudyConsentView,
    StudyList,
    StudyMemberList,
    StudyView,
)

log = logging.getLogger(__name__)




@dataclass(frozen=True)
class Listed:
    """A study as the pages show it: its view, its team (the owner's display name) and, to the
    lab deciding it only, the owner's email."""

    study: StudyView
    team: str
    email: str | None = None


@dataclass(frozen=True)
class StudyPage:
    """A study as its own page shows it: its view and team's name; its members, to its team;
    whether the caller manages the team (its owner) and may close it (its owner or the lab's
    admin, while it is open)."""

    study: StudyView
    team: str
    members: StudyMemberList | None
    manages: bool
    may_close: bool


# --- registration and the lab's decision -------------------------------------------------------


def register(uow: UnitOfWork, actor: Principal, target: object, name: object, title: object,
             purpose: object, recipients: object) -> StudyView:
    """A researcher's new study of a model or one version: proposed, until the lab decides."""
    authorize(actor, Action.STUDY_REGISTER)
    model_name, version = domain.parse_target(target)
    name = domain.check_study_name(name)
    purpose = domain.check_text("purpose", purpose, domain.MAX_PURPOSE)
    title = domain.check_text("title", title, domain.MAX_TITLE, required=False) or name
    keys = _recipients(recipients)
    if version is None:
        model = _model(uow, model_name)
        deposit_id = None
    else:
        deposit = find_sealed_deposit(uow, model_name, version)
        model, deposit_id = deposit.model, deposit.id
    if uow.session.scalar(select(Study.id).where(Study.name == name)) is not None:
        raise Conflict(f"a study named {name} exists already",
                       hint="choose another name (escrow study list shows the studies)")
    study = Study(id="st_" + secrets.token_hex(8), name=name, title=title, purpose=purpose,
                  model_id=model.id, deposit_id=deposit_id, recipients=json.dumps(keys),
                  owner_id=int(actor.id), state=domain.PROPOSED, created_at=now())
    uow.session.add(study)
    uow.session.flush()
    uow.audit(AuditAction.STUDY_REGISTERED, actor, study_subject(study),
              {"name": name, "recipients": len(keys)})
    uow.commit()
    return _view(uow, study, actor)


def decide(uow: UnitOfWork, actor: Principal, ref: str, decision: str,
           note: object = None) -> StudyView:
    """The lab (an admin of the model's organisation) approves or rejects a proposed study."""
    study = _find(uow, actor, ref)
    authorize(actor, Action.STUDY_DECIDE, org=study.model.organisation.name)
    if note is not None and not isinstance(note, str):
        raise InvalidInput("'note' must be a string", hint="say why, in a few words")
    state = domain.next_state(study.state, decision)
    if state is None:
        raise Conflict(f"study {study.name} is {study.state}: only a proposed study is decided",
                       hint="escrow study show STUDY says its state")
    study.state, study.decided_at = state, now()
    study.decided_by = f"{actor.kind.value}:{actor.id}"
    study.decision_note = (note or "").strip()[:domain.MAX_PURPOSE] or None
    action = AuditAction.STUDY_APPROVED if state == domain.APPROVED else AuditAction.STUDY_REJECTED
    uow.audit(action, actor, study_subject(study), {"name": study.name})
    uow.commit()
    return _view(uow, study, actor)


def close(uow: UnitOfWork, actor: Principal, ref: str) -> StudyView:
    """Its owner or the lab closes a study: nothing more is captured; captures stay fetchable."""
    study = _find(uow, actor, ref)
    if actor.id == str(study.owner_id) and actor.kind == PrincipalKind.USER:
        authorize(actor, Action.STUDY_CLOSE, owner=str(study.owner_id))
    else:
        authorize(actor, Action.STUDY_DECIDE, org=study.model.organisation.name)
    state = domain.next_state(study.state, "close")
    if state is None:
        raise Conflict(f"study {study.name} is {study.state} already",
                       hint="a closed or rejected study captures nothing; nothing to do")
    study.state, study.closed_at = state, now()
    uow.audit(AuditAction.STUDY_CLOSED, actor, study_subject(study), {"name": study.name})
    uow.commit()
    return _view(uow, study, actor)


def list_studies(uow: UnitOfWork, actor: Principal) -> StudyList:
    """The studies the caller may see: approved and closed ones (to consent to, or to know of),
    their own, and those of models of labs they administer."""
    authorize(actor, Action.STUDY_READ)
    found = uow.session.scalars(select(Study).order_by(Study.created_at)).all()
    return {"studies": [_view(uow, s, actor) for s in found if _visible(uow, s, actor)]}


def show(uow: UnitOfWork, actor: Principal, ref: str) -> StudyView:
    return _view(uow, _find(uow, actor, ref), actor)


def study_page(uow: UnitOfWork, actor: Principal, ref: str) -> StudyPage:
    """One study for its page, to whoever may see it (as `show`)."""
    study = _find(uow, actor, ref)
    owner = actor.kind == PrincipalKind.USER and actor.id == str(study.owner_id)
    in_team = actor.kind == PrincipalKind.USER and actor.id in _team_ids(uow, study)
    lab = actor.holds(study.model.organisation.name, ("admin",))
    return StudyPage(
        study=_view(uow, study, actor), team=_team(uow, study),
        members=_members(uow, study) if in_team else None, manages=owner,
        may_close=(owner or lab) and domain.next_state(study.state, "close") is not None)


def joinable(uow: UnitOfWork, actor: Principal) -> list[Listed]:
    """The approved studies, oldest first, with their team: what a person may consent to (the
    page of studies); each view says whether the caller's consent is in force."""
    authorize(actor, Action.STUDY_CONSENT)
    found = uow.session.scalars(
        select(Study).where(Study.state == domain.APPROVED).order_by(Study.created_at)).all()
    return [Listed(_view(uow, s, actor), _team(uow, s)) for s in found]


def org_studies(uow: UnitOfWork, actor: Principal, org: str) -> list[Listed]:
    """The studies of an organisation's models, for its admins (the lab's page): proposed ones
    first (oldest first: the next to decide), then the others, newest first."""
    authorize(actor, Action.STUDY_DECIDE, org=org)
    found = uow.session.scalars(
        select(Study).join(Model, Model.id == Study.model_id).join(Organisation)
        .where(Organisation.name == org).order_by(Study.created_at)).all()
    ordered = ([s for s in found if s.state == domain.PROPOSED]
               + [s for s in reversed(found) if s.state != domain.PROPOSED])
    return [Listed(_view(uow, s, actor), _team(uow, s), _email(uow, s)) for s in ordered]


# --- consent ---------------------------------------------------------------------------------


def consent(uow: UnitOfWork, actor: Principal, ref: str) -> StudyConsentView:
    """The caller donates their hosted exchanges to an approved study from now on (once:
    consenting again while in force answers the same consent)."""
    authorize(actor, Action.STUDY_CONSENT)
    study = _find(uow, actor, ref, hidden_too=True)  # not approved: say so, not "no study"
    if study.state != domain.APPROVED:
        raise Conflict(
            f"study {study.name} is {study.state}: only an approved study takes consent",
            hint="the model's lab approves a study first (escrow study approve STUDY); "
            "escrow study list shows the approved ones",
        )
    current = _consent_in_force(uow, study.id, int(actor.id))
    if current is not None:
        return _consent_view(current, study)
    given = StudyConsent(id="sc_" + secrets.token_hex(8), study_id=study.id,
                         user_id=int(actor.id), given_at=now())
    uow.session.add(given)
    uow.session.flush()
    # the consent's id is the participant's pseudonym in the captures: never on the log, where
    # it would stand next to the person
    uow.audit(AuditAction.STUDY_CONSENT_GIVEN, actor,
              {**study_subject(study), **_person(uow, int(actor.id))}, {"name": study.name})
    uow.commit()
    return _consent_view(given, study)


def withdraw(uow: UnitOfWork, actor: Principal, ref: str) -> StudyConsentView:
    """The caller's consent ends now: their next exchange is not captured."""
    authorize(actor, Action.STUDY_CONSENT)
    study = _find(uow, actor, ref)
    current = _consent_in_force(uow, study.id, int(actor.id))
    if current is None:
        raise NotFound(f"you have no consent in force to study {study.name}",
                       hint="nothing is captured for you; escrow study list shows your consents")
    current.withdrawn_at = now()
    uow.audit(AuditAction.STUDY_CONSENT_WITHDRAWN, actor,
              {**study_subject(study), **_person(uow, int(actor.id))}, {"name": study.name})
    uow.commit()
    return _consent_view(current, study)


def my_consents(uow: UnitOfWork, actor: Principal) -> list[StudyConsentView]:
    """The caller's consents, in force and withdrawn, newest first (their page, /me)."""
    authorize(actor, Action.STUDY_CONSENT)
    rows = uow.session.execute(
        select(StudyConsent, Study).join(Study, Study.id == StudyConsent.study_id)
        .where(StudyConsent.user_id == int(actor.id))
        .order_by(StudyConsent.given_at.desc())
    ).all()
    return [_consent_view(given, study) for given, study in rows]


# --- the study's team -------------------------------------------------------------------------


def add_member(uow: UnitOfWork, actor: Principal, ref: str, who: object) -> StudyMemberList:
    """The study's owner adds a person (by email or user id) to its team: they list and fetch
    its captures too. Adding a member again changes nothing. The team after it."""
    study, user = _team_change(uow, actor, ref, who)
    if user.id == study.owner_id:
        raise Conflict(f"user {user.id} owns study {study.name}: they are in its team already",
                       hint="add the other people of the team")
    if uow.session.get(StudyMember, (study.id, user.id)) is None:
        uow.session.add(StudyMember(study_id=study.id, user_id=user.id, added_at=now(),
                                    added_by=f"{actor.kind.value}:{actor.id}"))
        uow.session.flush()
        uow.audit(AuditAction.STUDY_MEMBER_ADDED, actor,
                  {**study_subject(study), **audit_subject(user)}, {"name": study.name})
        uow.commit()
    return _members(uow, study)


def remove_member(uow: UnitOfWork, actor: Principal, ref: str, who: object) -> StudyMemberList:
    """The study's owner removes a person (by email or user id) from its team: from now on they
    neither list nor fetch its captures. The team after it."""
    study, user = _team_change(uow, actor, ref, who)
    if user.id == study.owner_id:
        raise Conflict(f"user {user.id} owns study {study.name}: the owner stays in its team",
                       hint="close the study instead (escrow study close STUDY)")
    member = uow.session.get(StudyMember, (study.id, user.id))
    if member is None:
        raise NotFound(f"user {user.id} is not in the team of study {study.name}",
                       hint="escrow study member list STUDY shows its members")
    uow.session.delete(member)
    uow.session.flush()
    uow.audit(AuditAction.STUDY_MEMBER_REMOVED, actor,
              {**study_subject(study), **audit_subject(user)}, {"name": study.name})
    uow.commit()
    return _members(uow, study)


def list_members(uow: UnitOfWork, actor: Principal, ref: str) -> StudyMemberList:
    """The study's team besides its owner (to the team)."""
    return _members(uow, team_study(uow, actor, ref))


def _team_change(uow: UnitOfWork, actor: Principal, ref: str,
                 who: object) -> tuple[Study, User]:
    """The study whose team its owner changes, and the person named by email or user id."""
    study = _find(uow, actor, ref)
    authorize(actor, Action.STUDY_MEMBERS, owner=str(study.owner_id))
    if not isinstance(who, str) or not who.strip():
        raise InvalidInput("'user' is missing",
                           hint="name the person by their email or user id")
    return study, get_user(uow, who.strip())


def _members(uow: UnitOfWork, study: Study) -> StudyMemberList:
    rows = uow.session.execute(
        select(StudyMember, User).join(User, User.id == StudyMember.user_id)
        .where(StudyMember.study_id == study.id)
        .order_by(StudyMember.added_at, StudyMember.user_id)
    ).all()
    return {"study_id": study.id, "members": [
        {"user": str(user.id), "name": user.profile.name if user.profile else None,
         "added_at": iso(member.added_at)} for member, user in rows]}


# --- helpers ---------------------------------------------------------------------------------


def _recipients(value: object) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InvalidInput("'recipients' is missing",
                           hint="give the study team's age recipients (age1…), one or more")
    if len(value) > domain.MAX_RECIPIENTS:
        raise InvalidInput(f"at most {domain.MAX_RECIPIENTS} recipients",
                           hint="encrypt to a few team keys; share one identity if need be")
    parsed = [parse_key(text)[0] for text in value]
    if len({r.post_quantum for r in parsed}) > 1:  # age refuses to encrypt to such a mix
        raise InvalidInput(
            "the recipients mix post-quantum (age1pq1…) and classical keys: a capture would be "
            "only as safe as the classical ones",
            hint="give only age1pq1… keys, or only classical ones (age1…, ssh-ed25519)")
    return list(dict.fromkeys(canonical_recipient(r) for r in parsed))


def _model(uow: UnitOfWork, full: str) -> Model:
    org, short = split_model_name(full)
    found = uow.session.scalar(
        select(Model).join(Organisation).where(Organisation.name == org, Model.name == short))
    if found is None:
        raise NotFound(f"model {full} does not exist",
                       hint="check the organisation and the model name")
    return found


def _find(uow: UnitOfWork, actor: Principal, ref: str, hidden_too: bool = False) -> Study:
    """A study by id or name, if the caller may see it (404 otherwise, as for none);
    `hidden_too`: one not approved yet as well (its name and state only are said)."""
    authorize(actor, Action.STUDY_READ)
    study = uow.session.get(Study, ref) or uow.session.scalar(
        select(Study).where(Study.name == ref))
    if study is None or not (hidden_too or _visible(uow, study, actor)):
        raise NotFound(f"no study {ref}", hint="escrow study list shows the studies you may see")
    return study


def team_study(uow: UnitOfWork, actor: Principal, ref: str) -> Study:
    """The study, if the caller is in its team (its owner or a member)."""
    study = _find(uow, actor, ref)
    authorize(actor, Action.STUDY_CAPTURES, owner=_team_ids(uow, study))
    return study


def _team_ids(uow: UnitOfWork, study: Study) -> frozenset[str]:
    members = uow.session.scalars(
        select(StudyMember.user_id).where(StudyMember.study_id == study.id)).all()
    return frozenset({str(study.owner_id), *(str(m) for m in members)})


def _visible(uow: UnitOfWork, study: Study, actor: Principal) -> bool:
    return (study.state in (domain.APPROVED, domain.CLOSED)
            or actor.id == str(study.owner_id)
            or actor.holds(study.model.organisation.name, ("admin",))
            or actor.kind in (PrincipalKind.OPERATOR, PrincipalKind.SYSTEM)
            or "operator" in actor.global_roles
            or (actor.kind == PrincipalKind.USER and actor.id in _team_ids(uow, study)))


def _consent_in_force(uow: UnitOfWork, study_id: str, user_id: int) -> StudyConsent | None:
    return uow.session.scalar(select(StudyConsent).where(
        StudyConsent.study_id == study_id, StudyConsent.user_id == user_id,
        StudyConsent.withdrawn_at.is_(None)))


def _person(uow: UnitOfWork, user_id: int) -> dict[str, str]:
    user = uow.session.get(User, user_id)
    assert user is not None  # the caller
    return audit_subject(user)


def _team(uow: UnitOfWork, study: Study) -> str:
    owner = uow.session.get(User, study.owner_id)
    profile = owner.profile if owner is not None else None
    return (profile.name if profile is not None else None) or "a researcher (no name given)"


def _email(uow: UnitOfWork, study: Study) -> str | None:
    owner = uow.session.get(User, study.owner_id)
    return owner.profile.email if owner is not None and owner.profile is not None else None


def _target_name(study: Study) -> str:
    name = study.model.full_name
    return f"{name}@{study.deposit.version}" if study.deposit is not None else name


def study_subject(study: Study) -> dict[str, Any]:
    subject: dict[str, Any] = {"study": study.id, "model": study.model.full_name}
    if study.deposit is not None:
        subject.update(deposit=study.deposit.id, version=study.deposit.version)
    return subject


def _view(uow: UnitOfWork, study: Study, actor: Principal) -> StudyView:
    consenting = (actor.kind == PrincipalKind.USER and actor.id.isdigit()
                  and _consent_in_force(uow, study.id, int(actor.id)) is not None)
    return {
        "id": study.id,
        "name": study.name,
        "title": study.title,
        "purpose": study.purpose,
        "model": _target_name(study),
        "recipients": json.loads(study.recipients),
        "owner": str(study.owner_id),
        "state": study.state,
        "created_at": iso(study.created_at),
        "decided_at": iso(study.decided_at) if study.decided_at else None,
        "decision_note": study.decision_note,
        "closed_at": iso(study.closed_at) if study.closed_at else None,
        "consenting": consenting,
    }


def _consent_view(given: StudyConsent, study: Study) -> StudyConsentView:
    return {"id": given.id, "study_id": study.id, "study": study.name,
            "given_at": iso(given.given_at),
            "withdrawn_at": iso(given.withdrawn_at) if given.withdrawn_at else None}
