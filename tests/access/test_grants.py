"""Grants, key releases and revocation through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from access_support import WEIGHTS

from broker import age


@pytest.fixture
def granted(sealed, researcher, reviewer) -> dict:
    request_id = researcher.ask().json["request"]["id"]
    decided = reviewer.post(f"/api/v1/requests/{request_id}/approve")
    assert decided.status_code == 200, decided.json
    return decided.json["grant"]


def index_of(grant: dict, path: str) -> int:
    return next(f["index"] for f in grant["files"] if f["path"] == path)


def fetch_plaintext(client, released: dict, identities) -> bytes:
    """header (released) + payload (downloaded with the URL), decrypted with `identities`."""
    payload = client.get(urlsplit(released["payload_url"]).path)
    assert payload.status_code == 200
    out = io.BytesIO()
    header = base64.b64decode(released["header"])
    age.decrypt(io.BytesIO(header + payload.data), out, identities)
    return out.getvalue()


def set_grant(escrow, grant_id: str, **values) -> None:
    from broker.adapters.db.models import Grant

    with escrow.uow() as uow:
        grant = uow.session.get(Grant, grant_id)
        for name, value in values.items():
            setattr(grant, name, value)
        uow.commit()


def test_the_researcher_gets_back_the_exact_plaintext(client, granted, researcher, events):
    for path, data in WEIGHTS.items():
        url = f"/api/v1/grants/{granted['id']}/files/{index_of(granted, path)}/release"
        released = researcher.post(url)
        assert released.status_code == 200, released.json
        assert released.json["path"] == path
        assert released.json["sha256"] == hashlib.sha256(data).hexdigest()
        assert released.json["size"] == len(data)
        assert fetch_plaintext(client, released.json, researcher.identities) == data
    logged = events("key.released")
    assert len(logged) == 2
    assert {e["subject"]["grant"] for e in logged} == {granted["id"]}
    assert {e["subject"]["deposit"] for e in logged} == {granted["deposit_id"]}
    header = base64.b64decode(released.json["header"])
    assert logged[-1]["details"]["header_sha256"] == hashlib.sha256(header).hexdigest()


def test_the_header_comes_from_the_database_not_the_store(escrow, client, granted, researcher):
    from broker.services.deposits import deposit_prefix, header_key

    index = index_of(granted, "config.json")
    escrow.store.delete(deposit_prefix(granted["deposit_id"]) + header_key(index))
    released = researcher.post(f"/api/v1/grants/{granted['id']}/files/{index}/release")
    assert released.status_code == 200
    assert fetch_plaintext(client, released.json, researcher.identities) == WEIGHTS["config.json"]


def test_the_payload_url_expires_with_the_grant_when_that_is_sooner(escrow, granted, researcher):
    set_grant(escrow, granted["id"], expires_at=datetime.now(UTC) + timedelta(minutes=2))
    released = researcher.post(f"/api/v1/grants/{granted['id']}/files/0/release").json
    expires = datetime.fromisoformat(released["payload_url_expires_at"])
    assert expires <= datetime.now(UTC) + timedelta(minutes=2, seconds=2)


def test_the_payload_url_lives_at_most_fifteen_minutes(granted, researcher):
    released = researcher.post(f"/api/v1/grants/{granted['id']}/files/0/release").json
    expires = datetime.fromisoformat(released["payload_url_expires_at"])
    assert expires <= datetime.now(UTC) + timedelta(minutes=15, seconds=2)


def test_a_key_registered_after_approval_receives_nothing(client, granted, researcher):
    researcher.add_key()  # newer than the grant
    released = researcher.post(f"/api/v1/grants/{granted['id']}/files/0/release").json
    assert released["header"]
    old, new = researcher.identities
    header = base64.b64decode(released["header"])
    with pytest.raises(age.NoIdentityMatched):
        age.unwrap_file_key(header, [new])
    age.unwrap_file_key(header, [old])
    assert researcher.get("/api/v1/grants").json["grants"][0]["key_id"] == researcher.keys[0]


def test_the_per_file_limit_is_enforced_and_the_refusal_logged(granted, researcher, events):
    url = f"/api/v1/grants/{granted['id']}/files/0/release"
    first, second = researcher.post(url), researcher.post(url)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json["releases_left"], second.json["releases_left"]) == (1, 0)
    assert [e["details"]["release"] for e in events("key.released")] == [1, 2]
    third = researcher.post(url)
    assert third.status_code == 403
    assert "the most its policy allows (2)" in third.json["detail"]
    [refused] = events("key.release_refused")
    assert refused["details"]["reason"] == "limit_reached"
    assert researcher.post(f"/api/v1/grants/{granted['id']}/files/1/release").status_code == 200
    shown = researcher.get("/api/v1/grants").json["grants"][0]
    assert sorted(f["releases"] for f in shown["files"]) == [1, 2]


def test_revocation_takes_effect_on_the_next_call(granted, researcher, reviewer, events):
    url = f"/api/v1/grants/{granted['id']}/files/0/release"
    assert researcher.post(url).status_code == 200
    revoked = reviewer.post(f"/api/v1/grants/{granted['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json["state"] == "revoked"
    refused = researcher.post(url)
    assert refused.status_code == 403
    assert "was revoked" in refused.json["detail"]
    assert events("grant.revoked")[0]["subject"]["grant"] == granted["id"]
    assert events("key.release_refused")[0]["details"]["reason"] == "revoked"
    assert researcher.get(f"/api/v1/grants/{granted['id']}/manifest").status_code == 403


def test_revoking_twice_is_a_conflict(granted, reviewer):
    assert reviewer.post(f"/api/v1/grants/{granted['id']}/revoke").status_code == 200
    again = reviewer.post(f"/api/v1/grants/{granted['id']}/revoke")
    assert again.status_code == 409
    assert "revoked already" in again.json["detail"]


def test_only_reviewers_of_the_organisation_revoke(granted, researcher, person):
    outsider = person("olaf@other.example", (("other-lab", "admin"),))
    assert outsider.post(f"/api/v1/grants/{granted['id']}/revoke").status_code == 403
    assert researcher.post(f"/api/v1/grants/{granted['id']}/revoke").status_code == 403


def test_an_expired_grant_is_refused_and_the_refusal_logged(escrow, granted, researcher, events):
    set_grant(escrow, granted["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    refused = researcher.post(f"/api/v1/grants/{granted['id']}/files/0/release")
    assert refused.status_code == 403
    assert "expired at" in refused.json["detail"]
    assert events("key.release_refused")[0]["details"]["reason"] == "expired"
    assert researcher.get("/api/v1/grants").json["grants"][0]["state"] == "expired"


def test_a_grant_not_yet_valid_is_refused(escrow, granted, researcher, events):
    set_grant(escrow, granted["id"], not_before=datetime.now(UTC) + timedelta(hours=1))
    refused = researcher.post(f"/api/v1/grants/{granted['id']}/files/0/release")
    assert refused.status_code == 403
    assert "is valid from" in refused.json["detail"]
    assert events("key.release_refused")[0]["details"]["reason"] == "not_yet_valid"


def test_another_researcher_cannot_release_on_someone_elses_grant(granted, person, events):
    mallory = person("mallory@uni.example")
    mallory.add_key()
    response = mallory.post(f"/api/v1/grants/{granted['id']}/files/0/release")
    assert response.status_code == 404
    assert events("key.release_refused")[0]["details"]["reason"] == "not_holder"
    assert mallory.get(f"/api/v1/grants/{granted['id']}/manifest").status_code == 404
    assert events("key.released") == []


def test_a_grant_reaches_no_file_outside_its_deposit(lab, granted, researcher, reviewer):
    other = lab.deposit({"a": b"1", "b": b"2", "c": b"3"}, version="2025-01")
    missing = researcher.post(f"/api/v1/grants/{granted['id']}/files/2/release")
    assert missing.status_code == 404
    assert "has no file number 2" in missing.json["detail"]
    second = researcher.ask(version="2025-01").json["request"]["id"]
    other_grant = reviewer.post(f"/api/v1/requests/{second}/approve").json["grant"]
    assert other_grant["deposit_id"] == other["deposit_id"] != granted["deposit_id"]


def test_the_manifest_is_served_with_its_signature(escrow, granted, researcher):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from broker.services import signing

    response = researcher.get(f"/api/v1/grants/{granted['id']}/manifest")
    assert response.status_code == 200
    manifest = json.loads(response.json["manifest"])
    assert manifest["deposit_id"] == granted["deposit_id"]
    assert sorted(f["path"] for f in manifest["files"]) == sorted(WEIGHTS)
    signature = response.json["signature"]
    with escrow.uow() as uow:
        public = signing.active_key(uow, "manifest").public_key
    Ed25519PublicKey.from_public_bytes(public).verify(
        base64.b64decode(signature["signature"]), response.json["manifest"].encode())


def test_reviewers_list_the_grants_of_their_organisation(granted, reviewer, person):
    shown = reviewer.get("/api/v1/grants?org=acme-ai").json["grants"]
    assert [g["id"] for g in shown] == [granted["id"]]
    outsider = person("olaf@other.example", (("other-lab", "reviewer"),))
    assert outsider.get("/api/v1/grants?org=acme-ai").status_code == 403


def test_a_retired_key_receives_nothing_more_under_its_grant(granted, researcher, events):
    url = f"/api/v1/grants/{granted['id']}/files/0/release"
    assert researcher.post(url).status_code == 200
    retired = researcher.client.delete(f"/api/v1/me/keys/{granted['key_id']}",
                                       headers=researcher.auth)
    assert retired.status_code == 200, retired.json
    refused = researcher.post(url)
    assert refused.status_code == 403
    assert "has been retired" in refused.json["detail"]
    [event] = events("key.release_refused")
    assert event["details"]["reason"] == "key_retired"


# --- the hot path: what one key release costs the database -----------------------------------


def test_a_key_release_is_one_transaction_of_five_statements(granted, researcher, app):
    """Authentication (token, session, person and roles: one query), the grant's terms and
    file (one), the locked re-check that also locks the audit head, the numbered release row;
    then the event with its tree nodes and the new head: on PostgreSQL one `audit_append` call
    sent with the COMMIT in one message (past SQLAlchemy's statement hook), on SQLite an INSERT
    and an UPDATE. A regression here costs every fetch."""
    from sqlalchemy import event, select

    from broker.adapters.db.models import AuditEvent

    engine = app.extensions["escrow"].engine
    statements: list[str] = []
    transactions: list[str] = []

    def seen(_conn, _cursor, statement, _params, _context, _many) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    event.listen(engine, "before_cursor_execute", seen)
    event.listen(engine, "begin", lambda _conn: transactions.append("begin"))
    try:
        released = researcher.post(f"/api/v1/grants/{granted['id']}/files/0/release")
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert released.status_code == 200, released.json
    if engine.dialect.name == "sqlite":
        statements = [s for s in statements if s != "BEGIN"]  # SQLite's BEGIN IMMEDIATE hook
    append = [] if engine.dialect.name == "postgresql" else ["INSERT", "UPDATE"]
    assert statements == ["SELECT", "SELECT", "SELECT", "INSERT", *append]
    assert len(transactions) == 1
    with app.extensions["escrow"].uow() as uow:
        last = uow.session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
        assert last is not None and last.action == "key.released"


def test_a_bearer_token_carries_every_role_of_its_person(make_person, client):
    person = make_person("omar@acme.example",
                         (("acme-ai", "reviewer"), ("acme-ai", "admin"), ("beta-lab", "depositor")),
                         ("auditor", "operator"))
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {person.token}"})
    assert me.status_code == 200, me.json
    assert me.json["roles"] == {
        "orgs": {"acme-ai": ["admin", "reviewer"], "beta-lab": ["depositor"]},
        "global": ["auditor", "operator"],
    }
    nobody = make_person("nora@uni.example")
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {nobody.token}"})
    assert me.json["roles"] == {"orgs": {}, "global": []}


def test_concurrent_releases_never_pass_the_per_file_limit(granted, researcher, app, events):
    """Releases racing for the last allowed ones: the policy allows 2 per file, 8 ask at once.
    (On PostgreSQL the release number must be taken after the grant's lock is granted, by a
    statement of its own, or a release that waited for the lock would number from before the
    others committed.)"""
    import threading

    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def release() -> None:
        client = app.test_client()
        barrier.wait()
        answer = client.post(f"/api/v1/grants/{granted['id']}/files/0/release",
                             headers=researcher.auth)
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=release) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 200] + [403] * 6
    assert sorted(e["details"]["release"] for e in events("key.released")) == [1, 2]
    assert len(events("key.release_refused")) == 6


def test_a_revocation_racing_releases_lets_none_through_after_it(granted, researcher, reviewer,
                                                                app, events):
    """Four releases (the most the two files allow) and the revocation at once: a release is
    logged before the revocation or refused, never logged after it; and nothing deadlocks (a
    release locks the grant, then the audit head, in one statement: the order in which
    revocation takes them)."""
    import threading

    barrier = threading.Barrier(5)
    answers: list[tuple[str, int]] = []

    def post(path: str, headers: dict) -> None:
        client = app.test_client()
        barrier.wait()
        answers.append((path.rsplit("/", 1)[1], client.post(path, headers=headers).status_code))

    base = f"/api/v1/grants/{granted['id']}"
    calls = [(f"{base}/files/{n % 2}/release", researcher.auth) for n in range(4)]
    calls.insert(2, (f"{base}/revoke", reviewer.auth))
    threads = [threading.Thread(target=post, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert ("revoke", 200) in answers
    released = [status for what, status in answers if what == "release"]
    assert set(released) <= {200, 403} and len(released) == 4
    revoked_at = events("grant.revoked")[0]["seq"]
    assert all(e["seq"] < revoked_at for e in events("key.released"))
    assert len(events("key.released")) == released.count(200)
    refusals = events("key.release_refused")
    assert all(e["seq"] > revoked_at for e in refusals)
    assert [e["details"]["reason"] for e in refusals] == ["revoked"] * released.count(403)


def test_migration_0009_numbers_the_releases_made_before_it(granted, researcher, database_url):
    """Down to 0008 (no numbers), up again: each file's releases are numbered 1, 2, ... in the
    order they were made, and the next release takes the number after them."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from broker.adapters.db.engine import alembic_config

    base = f"/api/v1/grants/{granted['id']}/files"
    for index in (0, 1, 0):
        assert researcher.post(f"{base}/{index}/release").status_code == 200
    config = alembic_config(database_url)
    try:
        command.downgrade(config, "0008")
    finally:
        command.upgrade(config, "head")
    engine = create_engine(database_url)
    with engine.connect() as connection:
        numbered = connection.execute(
            text("SELECT file_idx, number FROM key_releases ORDER BY id")).all()
    engine.dispose()
    assert [tuple(row) for row in numbered] == [(0, 1), (1, 1), (0, 2)]
    again = researcher.post(f"{base}/1/release")
    assert again.status_code == 200 and again.json["releases_left"] == 0
