"""Every way of rewriting history that the issue names is caught, with a message saying where.

The attacker here has the database: they change, delete, swap and fork entries, recompute
whatever hashes they like, and plant checkpoints. Only signed checkpoints kept elsewhere (and
the checkpoint key) are out of their reach.
"""

from __future__ import annotations

import pytest
from api_deposit import depositor_token
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import delete, select, text, update

from broker.adapters.db.models import AuditCheckpoint, AuditEvent, AuditHead
from broker.auditlog import merkle
from broker.auditlog.checkpoint import checkpoint_body, format_note, note_key_id
from broker.auditlog.proofs import leaf_hash
from broker.domain.principals import OPERATOR
from broker.errors import TamperDetected
from broker.services import admin, audit


@pytest.fixture
def logged(escrow):
    """Twelve events, and the checkpoint an auditor saved of them (its note)."""
    for number in range(12 - _size(escrow)):
        with escrow.uow() as uow:
            uow.audit("test.event", OPERATOR, {"org": "acme-ai"}, {"n": number})
            uow.commit()
    with escrow.uow() as uow:
        return audit.sign_checkpoint(escrow, uow).note


def _size(escrow) -> int:
    with escrow.uow() as uow:
        return audit.head(uow)[0]


def _tamper(escrow, *statements) -> None:
    with escrow.uow() as uow:
        for statement in statements:
            uow.session.execute(statement)
        uow.commit()


def _leaf(escrow, seq: int) -> bytes:
    with escrow.uow() as uow:
        return bytes(uow.session.scalar(select(AuditEvent.leaf).where(AuditEvent.seq == seq)))


def _check(escrow, saved: str | None = None) -> dict:
    return audit.verify_deployment(escrow, saved)


def test_an_untouched_log_verifies_and_extends_the_saved_checkpoint(escrow, logged):
    with escrow.uow() as uow:
        admin.create_org(uow, OPERATOR, "later-lab")
    result = _check(escrow, logged)
    assert result["size"] > result["since"] == 12


def test_one_changed_byte_is_found_at_its_entry(escrow, logged):
    changed = _leaf(escrow, 5).replace(b'"n":', b'"m":')
    _tamper(escrow, update(AuditEvent).where(AuditEvent.seq == 5).values(leaf=changed))
    with pytest.raises(TamperDetected, match="entry 5 was changed"):
        _check(escrow)


def test_a_changed_entry_with_its_hash_recomputed_is_located_by_the_checkpoints(escrow, logged):
    changed = _leaf(escrow, 9).replace(b'"n":', b'"m":')
    _tamper(escrow, update(AuditEvent).where(AuditEvent.seq == 9)
            .values(leaf=changed, leaf_hash=leaf_hash(changed)))
    with pytest.raises(TamperDetected, match=r"an entry among 0\.\.11 was changed"):
        _check(escrow)


def test_a_deleted_entry_is_named(escrow, logged):
    _tamper(escrow, delete(AuditEvent).where(AuditEvent.seq == 7))
    with pytest.raises(TamperDetected, match="entry 7 is missing"):
        _check(escrow)


def test_two_swapped_entries_are_named(escrow, logged):
    three, four = _leaf(escrow, 3), _leaf(escrow, 4)
    _tamper(
        escrow,
        update(AuditEvent).where(AuditEvent.seq == 3)
        .values(leaf=four, leaf_hash=b"\xff" * 32),  # dodge the unique index for a moment
        update(AuditEvent).where(AuditEvent.seq == 4)
        .values(leaf=three, leaf_hash=leaf_hash(three)),
        update(AuditEvent).where(AuditEvent.seq == 3).values(leaf_hash=leaf_hash(four)),
    )
    with pytest.raises(TamperDetected, match="entry 3 says it is entry 4: entries were swapped"):
        _check(escrow)


def _fork_at(escrow, keep: int, new_events: int) -> None:
    """Truncate the log to `keep` entries, rebuild its tree and head consistently, drop the
    checkpoints beyond it, and append different events: what a careful forger would do."""
    with escrow.uow() as uow:
        hashes = [bytes(h) for h in uow.session.scalars(
            select(AuditEvent.leaf_hash).where(AuditEvent.seq < keep).order_by(AuditEvent.seq))]
    frontier: list[bytes] = []
    for size, digest in enumerate(hashes):
        _, frontier = merkle.append(size, frontier, digest)
    _tamper(
        escrow,
        delete(AuditEvent).where(AuditEvent.seq >= keep),
        delete(AuditCheckpoint).where(AuditCheckpoint.size > keep),
        update(AuditHead).values(size=0, frontier=b""),
    )
    with escrow.uow() as uow:  # re-grow the tree's nodes for the kept entries
        uow.session.execute(update(AuditHead).values(size=0, frontier=b""))
        uow.extend_tree(hashes)
        uow.commit()
    for number in range(new_events):
        with escrow.uow() as uow:
            uow.audit("forged.event", OPERATOR, {"org": "acme-ai"}, {"n": number})
            uow.commit()


def test_a_fork_passes_its_own_self_check_but_not_the_saved_checkpoint(escrow, logged):
    _fork_at(escrow, keep=8, new_events=6)
    assert _check(escrow)["size"] == 14  # consistent with itself: only outside evidence helps
    with pytest.raises(TamperDetected, match=r"among 0\.\.11 was changed or replaced"):
        _check(escrow, logged)


def test_a_checkpoint_forged_with_another_key_is_refused(escrow, logged):
    with escrow.uow() as uow:
        size, root = audit.head(uow)
    forger = Ed25519PrivateKey.generate()
    public = forger.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    origin = escrow.settings.origin
    body = checkpoint_body(origin, size + 1, root)
    forged = format_note(body, origin, note_key_id(origin, public), forger.sign(body))
    with pytest.raises(TamperDetected, match="saved checkpoint does not verify"):
        _check(escrow, forged)
    _tamper(escrow, text("DELETE FROM audit_checkpoints"))
    with escrow.uow() as uow:
        uow.session.add(AuditCheckpoint(size=size, root=root, note=forged))
        uow.commit()
    with pytest.raises(TamperDetected, match=f"audit checkpoint of size {size}"):
        _check(escrow)


def test_a_failing_append_aborts_the_change_and_the_api_answers_503(private_database_url, tmp_path):
    from broker import create_app
    from broker.config import load_settings
    from broker.services.setup import initialise

    settings = load_settings({"ESCROW_DATA_DIR": str(tmp_path / "data"),
                              "ESCROW_DATABASE_URL": private_database_url})
    escrow, _ = initialise(settings, migrate=False)
    app = create_app(settings)
    token = depositor_token(escrow)
    _tamper(escrow, text("DROP TABLE audit_events"))
    answer = app.test_client().post(
        "/api/v1/deposits", headers={"Authorization": f"Bearer {token}"},
        json={"model": "acme-ai/gpt-small", "version": "1", "files": [{"path": "a", "size": 1}]})
    assert answer.status_code == 503
    assert "audit log" in answer.json["detail"] and "not made" in answer.json["detail"]
    with escrow.uow() as uow:
        assert uow.session.execute(text("SELECT count(*) FROM deposits")).scalar() == 0
    app.extensions["escrow"].engine.dispose()
    escrow.engine.dispose()
