"""`escrow audit …` against a real broker process, and every client command's own check that
the broker's log still extends the newest checkpoint it saw."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from live import start_broker
from sqlalchemy import delete, select, update

from broker.adapters.db.models import AuditCheckpoint, AuditEvent, AuditHead
from broker.config import load_settings
from broker.container import build_escrow
from broker.domain.principals import OPERATOR
from broker.services import people

EXIT_TAMPER = 4


@pytest.fixture
def broker(tmp_path):
    # Fixity off: its run appends an event and signs a checkpoint of its own, which would
    # cover the forged checkpoints these tests plant.
    process = start_broker(tmp_path / "broker", {"ESCROW_CHECKPOINT_INTERVAL_S": "1",
                                                 "ESCROW_FIXITY_INTERVAL_S": "0"})
    yield process
    process.stop()


def direct(broker):
    """The broker's own database, as an operator (or an attacker) at the console has it."""
    return build_escrow(load_settings(broker.env))


def auditor_token(broker) -> str:
    from datetime import UTC, datetime

    from broker.services import sessions

    escrow = direct(broker)
    with escrow.uow() as uow:
        email = "audrey@audit.example"
        user = people.upsert_user(uow, OPERATOR, "https://idp.audit.example", email,
                                  people.Claims(email=email, email_verified=True))
        people.grant_global_role(uow, OPERATOR, user, "auditor")
        session = sessions.start_session(uow, user, "device", user.issuer, datetime.now(UTC))
        token = sessions.issue_tokens(uow, session).access_token
        uow.commit()
    escrow.engine.dispose()
    return token


def test_checkpoint_verify_show_prove_and_export(broker, tmp_path):
    token = ["--token", auditor_token(broker)]
    saved = tmp_path / "cp.txt"
    note = broker.escrow("audit", "checkpoint").stdout
    saved.write_text(note)
    origin, size = note.splitlines()[:2]
    assert origin.startswith("weights-escrow/") and int(size) > 0

    broker.escrow("admin", "org", "create", "beta-lab")
    time.sleep(1.1)  # ESCROW_CHECKPOINT_INTERVAL_S: the next one covers the new events
    remote = broker.last_json(broker.escrow(
        "audit", "verify", "--broker", broker.url, "--since", str(saved), "--json", *token))
    assert remote["ok"] and remote["since"] == int(size) and remote["size"] > int(size)
    local = broker.last_json(broker.escrow("audit", "verify", "--since", str(saved), "--json"))
    assert local["ok"] and local["size"] >= remote["size"]

    shown = broker.escrow("audit", "show", "--action", "org.created", *token).stdout
    assert "org=beta-lab" in shown and "org=acme-ai" in shown
    seq = json.loads(broker.escrow("audit", "show", "--org", "beta-lab", "--json", *token)
                     .stdout.splitlines()[-1])["events"][0]["seq"]

    proof = tmp_path / "proof.json"
    proof.write_text(broker.escrow("audit", "prove", str(seq), *token).stdout)
    bundle = json.loads(proof.read_text())
    assert bundle["seq"] == seq and "leaf" in bundle
    offline = broker.escrow("audit", "check-proof", str(proof))
    assert f"event {seq} is in the signed log" in offline.stdout

    bundle["leaf_hash"] = "00" * 32
    proof.write_text(json.dumps(bundle))
    forged = broker.escrow("audit", "check-proof", str(proof), check=False)
    assert forged.returncode == EXIT_TAMPER
    assert "do not hash to the proven leaf hash" in forged.stderr

    lines = broker.escrow("audit", "export", "--format", "jsonl", *token).stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(len(lines)))
    table = broker.escrow("audit", "export", "--format", "csv", "--org", "beta-lab", *token)
    assert table.stdout.splitlines()[0].startswith("seq,time,action")


def test_a_broker_that_rewrites_history_is_caught_by_its_next_client_command(broker):
    broker.escrow("audit", "checkpoint")  # the client saves the newest checkpoint it saw
    seen = json.loads((Path(broker.env["ESCROW_CONFIG_DIR"]) / "checkpoints.json").read_text())
    assert [entry["size"] for entry in seen.values()] != []
    escrow = direct(broker)
    keep = 3
    # One transaction, as a careful forger would: the broker's worker never sees (and signs)
    # the truncated log in between.
    with escrow.uow() as uow:  # the operator truncates, rebuilds and appends other events
        hashes = [bytes(h) for h in uow.session.scalars(
            select(AuditEvent.leaf_hash).where(AuditEvent.seq < keep).order_by(AuditEvent.seq))]
        uow.session.execute(delete(AuditEvent).where(AuditEvent.seq >= keep))
        uow.session.execute(delete(AuditCheckpoint))
        uow.session.execute(update(AuditHead).values(size=0, frontier=b""))
        uow.extend_tree(hashes)
        for number in range(30):
            uow.audit("forged.event", OPERATOR, {"org": "acme-ai"}, {"n": number})
        uow.commit()
    escrow.engine.dispose()
    result = broker.escrow("grants", check=False)
    assert result.returncode == EXIT_TAMPER
    assert "does not extend the one of size" in result.stderr
    assert "history was rewritten" in result.stderr


def test_a_checkpoint_signed_by_another_key_stops_the_client(broker):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from broker.auditlog.checkpoint import checkpoint_body, format_note
    from broker.services import audit

    broker.escrow("audit", "checkpoint")
    escrow = direct(broker)
    with escrow.uow() as uow:  # one transaction: the worker cannot sign this size first
        uow.audit("test.event", OPERATOR, {"org": "acme-ai"})
        size, root = audit.head(uow)
        origin = escrow.settings.origin
        body = checkpoint_body(origin, size, root)
        forger = Ed25519PrivateKey.generate()
        uow.session.add(AuditCheckpoint(size=size, root=root,
                                        note=format_note(body, origin, b"\0\0\0\0",
                                                         forger.sign(body))))
        uow.commit()
    escrow.engine.dispose()
    result = broker.escrow("audit", "checkpoint", check=False)
    assert result.returncode == EXIT_TAMPER
    assert "does not verify with the pinned key" in result.stderr
