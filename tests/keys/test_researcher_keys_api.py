import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from broker import age
from broker.adapters.db.models import AuditEvent, ResearcherKey
from broker.domain.principals import OPERATOR
from broker.services import admin
from broker.services.keys import proven_keys

KEYS = "/api/v1/me/keys"


def register(client, person, recipient, label="laptop"):
    return client.post(KEYS, json={"recipient": recipient, "label": label}, headers=person.auth)


def prove(client, person, key_id, response):
    return client.post(f"{KEYS}/{key_id}/proof", json={"response": response},
                       headers=person.auth)


def identity_of(kind, ssh_key_path=None):
    """(recipient to register, identity file text) of a new key of each kind."""
    if kind == "x25519":
        identity = age.generate_x25519_identity()
    elif kind == "mlkem768x25519":
        identity = age.generate_hybrid_identity()
    else:
        return ssh_key_path.with_suffix(".pub").read_text(), ssh_key_path.read_text()
    return identity.to_recipient().encode(), identity.encode()


def test_every_kind_of_key_registers_then_counts_once_proven(client, escrow, ada, decrypt,
                                                             ssh_key):
    for kind in ("x25519", "mlkem768x25519", "ssh-ed25519"):
        recipient, identity = identity_of(kind, ssh_key)

        registered = register(client, ada, recipient)
        assert registered.status_code == 201, registered.json
        key = registered.json
        assert (key["type"], key["state"]) == (kind, "pending")
        assert key["challenge"].startswith("-----BEGIN AGE ENCRYPTED FILE-----")
        assert "ada@laptop.example" not in json.dumps(key)  # an ssh comment is not kept
        with escrow.uow() as uow:
            assert key["id"] not in [k.id for k in proven_keys(uow, ada.user_id)]

        proven = prove(client, ada, key["id"], decrypt(key["challenge"], identity))
        assert proven.status_code == 200, proven.json
        assert proven.json["state"] == "proven"
        with escrow.uow() as uow:
            assert key["id"] in [k.id for k in proven_keys(uow, ada.user_id)]
            stored = uow.session.get(ResearcherKey, key["id"])
            assert stored.challenge is None and stored.challenge_sha256 is None


def test_the_plain_age_tool_decrypts_the_challenge(client, ada, tmp_path, require_part,
                                                   secret_from, ssh_key):
    require_part(shutil.which("age") is not None, "the Debian age tool")
    age_key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(age_key)], check=True, capture_output=True)
    age_recipient = subprocess.run(["age-keygen", "-y", str(age_key)], check=True,
                                   capture_output=True, text=True).stdout
    for identity_file, recipient in [(age_key, age_recipient),
                                     (ssh_key, ssh_key.with_suffix(".pub").read_text())]:
        key = register(client, ada, recipient).json
        challenge = tmp_path / "c.age"
        challenge.write_text(key["challenge"])

        plaintext = subprocess.run(["age", "-d", "-i", str(identity_file), str(challenge)],
                                   check=True, capture_output=True).stdout

        assert prove(client, ada, key["id"], secret_from(plaintext)).json["state"] == "proven"


def test_a_wrong_proof_is_refused_and_the_key_stays_unproven(client, escrow, ada, decrypt):
    identity = age.generate_x25519_identity()
    key = register(client, ada, identity.to_recipient().encode()).json
    for wrong in ["00" * 32, "not a secret", "", "AAAA"]:
        refused = prove(client, ada, key["id"], wrong)
        assert refused.status_code == 422
        assert refused.mimetype == "application/problem+json"
        assert "does not match the challenge" in refused.json["detail"]
    with escrow.uow() as uow:
        assert uow.session.get(ResearcherKey, key["id"]).proven_at is None
    # the challenge still stands: the right answer works afterwards
    right = decrypt(key["challenge"], identity.encode())
    assert prove(client, ada, key["id"], right).json["state"] == "proven"


def test_an_expired_challenge_asks_for_a_new_one(client, escrow, ada, decrypt):
    identity = age.generate_x25519_identity()
    key = register(client, ada, identity.to_recipient().encode()).json
    old_secret = decrypt(key["challenge"], identity.encode())
    with escrow.uow() as uow:
        uow.session.get(ResearcherKey, key["id"]).challenge_expires_at = (
            datetime.now(UTC) - timedelta(seconds=1))
        uow.commit()

    expired = prove(client, ada, key["id"], old_secret)
    assert expired.status_code == 409
    assert f"{KEYS}/{key['id']}/challenge" in expired.json["hint"]
    assert client.get(f"{KEYS}/{key['id']}", headers=ada.auth).json["challenge"] is None

    renewed = client.post(f"{KEYS}/{key['id']}/challenge", headers=ada.auth)
    assert renewed.status_code == 200
    assert prove(client, ada, key["id"], old_secret).status_code == 422
    new_secret = decrypt(renewed.json["challenge"], identity.encode())
    assert prove(client, ada, key["id"], new_secret).json["state"] == "proven"


def test_a_login_older_than_five_minutes_can_not_register_a_key_but_may_use_its_keys(
        client, escrow, login, decrypt):
    identity = age.generate_x25519_identity()
    key = register(client, login(minutes_ago=0), identity.to_recipient().encode()).json
    stale = login(minutes_ago=10)  # the same person, through an older login
    with escrow.uow() as uow:
        events_before = uow.session.scalar(select(func.count()).select_from(AuditEvent))

    refused = register(client, stale, age.generate_x25519_identity().to_recipient().encode())

    assert refused.status_code == 401
    assert refused.mimetype == "application/problem+json"
    assert refused.json["title"] == "fresh login required"
    assert "/auth/login?max_age=300" in refused.json["hint"]
    assert "escrow login" in refused.json["hint"]
    with escrow.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(ResearcherKey)) == 1
        assert uow.session.scalar(select(func.count()).select_from(AuditEvent)) == events_before
    # what a key already registered needs is a person, not a fresh login
    assert client.get(KEYS, headers=stale.auth).status_code == 200
    secret = decrypt(key["challenge"], identity.encode())
    assert prove(client, stale, key["id"], secret).status_code == 200
    assert client.delete(f"{KEYS}/{key['id']}", headers=stale.auth).status_code == 200


def test_a_service_token_can_not_register_or_list_researcher_keys(client, escrow):
    with escrow.uow() as uow:
        admin.create_org(uow, OPERATOR, "acme-ai")
    with escrow.uow() as uow:
        token = admin.create_token(uow, OPERATOR, "acme-ai", "depositor", days=1).token
    auth = {"Authorization": f"Bearer {token}"}
    recipient = age.generate_x25519_identity().to_recipient().encode()

    refused = client.post(KEYS, json={"recipient": recipient}, headers=auth)
    assert refused.status_code in (401, 403)
    assert "person" in refused.json["detail"]
    assert client.get(KEYS, headers=auth).status_code in (401, 403)
    assert client.post(KEYS, json={"recipient": recipient}).status_code == 401


def test_a_string_that_is_not_a_supported_key_is_refused_clearly(client, escrow, ada):
    refused = register(client, ada, "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ")
    assert refused.status_code == 422
    assert refused.mimetype == "application/problem+json"
    assert "ssh-ed25519" in refused.json["hint"]
    with escrow.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(ResearcherKey)) == 0


def test_the_list_shows_pending_proven_and_retired_keys_of_the_caller_only(
        client, ada, login, decrypt):
    keys = {}
    for name in ("pending", "proven", "retired"):
        identity = age.generate_x25519_identity()
        keys[name] = register(client, ada, identity.to_recipient().encode(), label=name).json
        if name != "pending":
            prove(client, ada, keys[name]["id"], decrypt(keys[name]["challenge"],
                                                         identity.encode()))
    client.delete(f"{KEYS}/{keys['retired']['id']}", headers=ada.auth)
    bob = login("bob@uni.example")
    register(client, bob, age.generate_x25519_identity().to_recipient().encode())

    listed = client.get(KEYS, headers=ada.auth).json["keys"]

    assert [(k["label"], k["state"]) for k in listed] == [
        ("pending", "pending"), ("proven", "proven"), ("retired", "retired")]
    assert all("challenge" not in k for k in listed)
    assert len(client.get(KEYS, headers=bob.auth).json["keys"]) == 1
    # another person's key is "not found", for reading, proving and retiring alike
    other = keys["proven"]["id"]
    assert client.get(f"{KEYS}/{other}", headers=bob.auth).status_code == 404
    assert prove(client, bob, keys["pending"]["id"], "00" * 32).status_code == 404
    assert client.delete(f"{KEYS}/{other}", headers=bob.auth).status_code == 404


def test_a_key_registers_once_and_once_retired_gets_no_grants_and_no_proof(
        client, escrow, ada, decrypt):
    identity = age.generate_x25519_identity()
    recipient = identity.to_recipient().encode()
    key = register(client, ada, recipient).json
    secret = decrypt(key["challenge"], identity.encode())
    again = register(client, ada, recipient)
    assert again.status_code == 409
    assert key["id"] in again.json["detail"]

    retired = client.delete(f"{KEYS}/{key['id']}", headers=ada.auth)
    assert retired.json["state"] == "retired"
    assert client.delete(f"{KEYS}/{key['id']}", headers=ada.auth).status_code == 200

    assert prove(client, ada, key["id"], secret).status_code == 409
    with escrow.uow() as uow:
        assert proven_keys(uow, ada.user_id) == []
    assert register(client, ada, recipient).status_code == 201  # a new key, a new proof


def test_registration_proof_and_retirement_are_audited_without_personal_data(
        client, escrow, login, decrypt, ssh_key):
    ada = login("ada@uni.example", name="Ada Lovelace")
    key = register(client, ada, ssh_key.with_suffix(".pub").read_text(),
                   label="Ada's laptop").json
    prove(client, ada, key["id"], decrypt(key["challenge"], ssh_key.read_text()))
    client.delete(f"{KEYS}/{key['id']}", headers=ada.auth)

    with escrow.uow() as uow:
        events = [json.loads(e.leaf) for e in uow.session.scalars(
            select(AuditEvent).where(AuditEvent.action.like("key.%")).order_by(AuditEvent.seq))]
    assert [e["action"] for e in events] == ["key.registered", "key.proven", "key.retired"]
    for event in events:
        assert event["subject"]["user"] == str(ada.user_id)
        assert len(event["subject"]["user_commitment"]) == 64
        assert event["subject"]["key"] == key["id"]
        assert event["details"] == {"type": "ssh-ed25519", "fingerprint": key["fingerprint"]}
        leaf = json.dumps(event)
        for personal in ("ada@", "Ada", "Lovelace", "laptop", "127.0.0.1"):
            assert personal not in leaf
