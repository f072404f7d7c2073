"""The audit leaves' bytes do not depend on how the vocabulary is typed in the code.

`tests/vectors/audit/leaves.txt` holds the leaves that `UnitOfWork.audit` wrote, on the code
before the actions, principal kinds and states became enums, for one event per audit action
(actors of every kind, states in the details). The same events, now built from the enums'
members, are appended again here and their leaves compared byte for byte, the time field aside
(the clock is the real one). Actions added to `AuditAction` since are checked to write their
plain string.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from broker.adapters.db.engine import make_engine
from broker.adapters.db.models import AuditEvent
from broker.adapters.db.uow import UnitOfWork
from broker.domain.events import AuditAction
from broker.domain.principals import OPERATOR, SYSTEM, Principal, PrincipalKind, service_token
from broker.domain.states import DepositState, FileState, GrantState, RequestState

VECTOR = Path(__file__).resolve().parent.parent / "vectors" / "audit" / "leaves.txt"
TIME = re.compile(rb'"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"')

USER = Principal(kind=PrincipalKind.USER, id="7", session_id="s-1")
TOKEN = service_token("t-3", "acme-ai", "depositor")
ACTORS = (USER, TOKEN, OPERATOR, SYSTEM)

ACTIONS = (
    AuditAction.CUSTODY_KEY_SPLIT,
    AuditAction.DEPOSIT_CREATED,
    AuditAction.DEPOSIT_FILE_RESTARTED,
    AuditAction.DEPOSIT_FILE_UPLOADED,
    AuditAction.DEPOSIT_FINALIZED,
    AuditAction.DEPOSIT_MARKED_CLASSICAL,
    AuditAction.DEPOSIT_REOPENED,
    AuditAction.DEPOSIT_SEALED,
    AuditAction.DEPOSIT_UPLOAD_LOST,
    AuditAction.DEPOSIT_VERIFICATION_FAILED,
    AuditAction.DEPOSIT_VERIFICATION_PASSED,
    AuditAction.DEVICE_APPROVED,
    AuditAction.DEVICE_DENIED,
    AuditAction.ESCROW_RECOVERED,
    AuditAction.FIXITY_FAILED,
    AuditAction.FIXITY_INCOMPLETE,
    AuditAction.FIXITY_PASSED,
    AuditAction.FIXITY_REPAIRED,
    AuditAction.GRANT_CREATED,
    AuditAction.GRANT_REVOKED,
    AuditAction.KEY_PROVEN,
    AuditAction.KEY_REGISTERED,
    AuditAction.KEY_RELEASE_REFUSED,
    AuditAction.KEY_RELEASED,
    AuditAction.KEY_RETIRED,
    AuditAction.LOGIN_LINK_CREATED,
    AuditAction.MODEL_CREATED,
    AuditAction.NDA_SIGNED,
    AuditAction.NDA_SSH_SIGNATURE_ADDED,
    AuditAction.ORG_CREATED,
    AuditAction.REQUEST_CREATED,
    AuditAction.REQUEST_WITHDRAWN,
    AuditAction.REVIEW_APPROVED,
    AuditAction.REVIEW_DENIED,
    AuditAction.ROLE_GRANTED,
    AuditAction.ROLE_REVOKED,
    AuditAction.SIGNING_KEY_CREATED,
    AuditAction.TOKEN_CREATED,
    AuditAction.TOKEN_ISSUED,
    AuditAction.TOKEN_REPLAYED,
    AuditAction.TOKEN_REVOKED,
    AuditAction.USER_CREATED,
    AuditAction.USER_LOGIN,
    AuditAction.USER_LOGOUT,
)
DEPOSIT_STATES = tuple(DepositState)
FILE_STATES = tuple(FileState)
GRANT_STATES = tuple(GrantState)
REQUEST_STATES = tuple(RequestState)


def events() -> list[tuple[AuditAction, Principal, dict[str, Any], dict[str, Any]]]:
    """(action, actor, subject, details): every action once, the states cycled through."""
    made = []
    for n, action in enumerate(ACTIONS):
        subject = {"org": "acme-ai", "deposit": f"d{n}", "user": n}
        details = {
            "state": DEPOSIT_STATES[n % len(DEPOSIT_STATES)],
            "file": {"index": n, "state": FILE_STATES[n % len(FILE_STATES)]},
            "grant_state": GRANT_STATES[n % len(GRANT_STATES)],
            "requests": [REQUEST_STATES[n % len(REQUEST_STATES)], "naïve ✓"],
        }
        made.append((action, ACTORS[n % len(ACTORS)], subject, details))
    return made


def leaves(database_url: str) -> list[bytes]:
    """The stored leaves, with their time taken out; checks the columns copied from them."""
    engine = make_engine(database_url)
    try:
        sessions = sessionmaker(engine, expire_on_commit=False)
        with UnitOfWork(sessions) as uow:
            for action, actor, subject, details in events():
                uow.audit(action, actor, subject, details)
            uow.commit()
        with sessions() as session:
            stored = session.execute(
                select(AuditEvent.leaf, AuditEvent.action, AuditEvent.actor).order_by(
                    AuditEvent.seq
                )
            ).all()
    finally:
        engine.dispose()
    for (leaf, action, actor), (_, principal, _, _) in zip(stored, events(), strict=True):
        assert type(action) is str and type(actor) is str
        assert f'"action":"{action}"'.encode() in leaf
        assert actor == f"{principal.audit_ref()['kind']}:{principal.id}"
    return [TIME.sub(b'"time":"T"', leaf) for leaf, _, _ in stored]


def test_the_vector_names_actions_of_the_enum() -> None:
    assert len(set(ACTIONS)) == len(ACTIONS)
    stored = [
        re.search(rb'"action":"([a-z_.]+)"', leaf) for leaf in VECTOR.read_bytes().splitlines()
    ]
    assert [m[1].decode() if m else None for m in stored] == [a.value for a in ACTIONS]
    newer = set(AuditAction) - set(ACTIONS)  # members added after the vector was stored
    assert newer == {
        AuditAction.CUSTODY_ROTATION_FINISHED,
        AuditAction.CUSTODY_ROTATION_STARTED,
        AuditAction.DEPOSIT_MIRROR_FAILED,
        AuditAction.DEPOSIT_MIRRORED,
        AuditAction.DEPOSIT_UPLOAD_ABORTED,
        AuditAction.FIXITY_COMPLETED,
        # release agreements
        AuditAction.AGREEMENT_AMENDED,
        AuditAction.AGREEMENT_ATTACHED,
        AuditAction.AGREEMENT_CHANGE_REFUSED,
        AuditAction.AGREEMENT_CHECKIN,
        AuditAction.AGREEMENT_LAB_RELEASED,
        AuditAction.AGREEMENT_REMOVED,
        AuditAction.AGREEMENT_TRIGGERED,
        AuditAction.AGREEMENT_VOTE_WITHDRAWN,
        AuditAction.AGREEMENT_VOTED,
        # grant close-out, quarantine of a version
        AuditAction.GRANT_CLOSED,
        AuditAction.VERSION_QUARANTINED,
        AuditAction.VERSION_QUARANTINE_LIFTED,
        # leak response: a version re-encrypted under fresh keys
        AuditAction.VERSION_REKEY_FAILED,
        AuditAction.VERSION_REKEY_REQUESTED,
        AuditAction.VERSION_REKEYED,
        # hosted access: a model worker loading a version, and stopping
        AuditAction.MODEL_WORKER_LOADED,
        AuditAction.MODEL_WORKER_STOPPED,
        # hosted access: API keys of a grant, a grant's usage per day
        AuditAction.HOSTED_KEY_CREATED,
        AuditAction.HOSTED_KEY_REVOKED,
        AuditAction.HOSTED_USAGE,
        # studies of live use: registered, decided, closed; consent; captures per day
        AuditAction.STUDY_APPROVED,
        AuditAction.STUDY_CAPTURES,
        AuditAction.STUDY_CLOSED,
        AuditAction.STUDY_CONSENT_GIVEN,
        AuditAction.STUDY_CONSENT_WITHDRAWN,
        AuditAction.STUDY_MEMBER_ADDED,
        AuditAction.STUDY_MEMBER_REMOVED,
        AuditAction.STUDY_REGISTERED,
        AuditAction.STUDY_REJECTED,
    }


def test_a_member_writes_the_leaf_its_string_would(database_url: str) -> None:
    """For every member: the leaf holds exactly the member's value as a JSON string."""
    engine = make_engine(database_url)
    try:
        sessions = sessionmaker(engine, expire_on_commit=False)
        with UnitOfWork(sessions) as uow:
            for action in AuditAction:
                uow.audit(action, OPERATOR, {"state": DepositState.SEALED})
            uow.commit()
        with sessions() as session:
            stored = session.scalars(select(AuditEvent.leaf).order_by(AuditEvent.seq)).all()
    finally:
        engine.dispose()
    for action, leaf in zip(AuditAction, stored, strict=True):
        assert leaf.startswith(b'{"action":"' + action.value.encode() + b'","actor":')
        assert b'"subject":{"state":"sealed"}' in leaf


def test_the_leaves_are_the_stored_bytes(database_url: str) -> None:
    expected = VECTOR.read_bytes().splitlines()
    got = leaves(database_url)
    assert len(got) == len(expected) == len(ACTIONS)
    for mine, stored in zip(got, expected, strict=True):
        assert mine == stored


if __name__ == "__main__":  # writes the vector: see tests/vectors/audit/README.md
    import tempfile

    from broker.adapters.db.engine import upgrade

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/escrow.db"
        upgrade(url)
        VECTOR.write_bytes(b"".join(leaf + b"\n" for leaf in leaves(url)))
