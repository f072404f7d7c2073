"""The audit leaves' bytes do not depend on how the vocabulary is typed in the code.

`tests/vectors/audit/leaves.txt` holds the leaves that `UnitOfWork.audit` wrote, on the code
before the actions, principal kinds and states became enums, for one event per audit action
(actors of every kind, states in the details). The same events are appended again here and
their leaves compared byte for byte, the time field aside (the clock is the real one).
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
from broker.domain.principals import OPERATOR, SYSTEM, Principal, service_token

VECTOR = Path(__file__).resolve().parent.parent / "vectors" / "audit" / "leaves.txt"
TIME = re.compile(rb'"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"')

USER = Principal(kind="user", id="7", session_id="s-1")
TOKEN = service_token("t-3", "acme-ai", "depositor")
ACTORS = (USER, TOKEN, OPERATOR, SYSTEM)

ACTIONS = (
    "custody.key_split",
    "deposit.created",
    "deposit.file_restarted",
    "deposit.file_uploaded",
    "deposit.finalized",
    "deposit.marked_classical",
    "deposit.reopened",
    "deposit.sealed",
    "deposit.upload_lost",
    "deposit.verification_failed",
    "deposit.verification_passed",
    "device.approved",
    "device.denied",
    "escrow.recovered",
    "fixity.failed",
    "fixity.incomplete",
    "fixity.passed",
    "fixity.repaired",
    "grant.created",
    "grant.revoked",
    "key.proven",
    "key.registered",
    "key.release_refused",
    "key.released",
    "key.retired",
    "login_link.created",
    "model.created",
    "nda.signed",
    "nda.ssh_signature_added",
    "org.created",
    "request.created",
    "request.withdrawn",
    "review.approved",
    "review.denied",
    "role.granted",
    "role.revoked",
    "signing_key.created",
    "token.created",
    "token.issued",
    "token.replayed",
    "token.revoked",
    "user.created",
    "user.login",
    "user.logout",
)
DEPOSIT_STATES = ("open", "verifying", "sealed", "failed")
FILE_STATES = ("pending", "uploading", "uploaded", "verified", "failed")
GRANT_STATES = ("active", "not-yet-valid", "expired", "revoked")
REQUEST_STATES = ("pending", "approved", "denied", "withdrawn")


def events() -> list[tuple[Any, Principal, dict[str, Any], dict[str, Any]]]:
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
