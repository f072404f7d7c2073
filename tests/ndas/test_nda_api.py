import hashlib
import json
import subprocess

from sqlalchemy import func, select

from broker.adapters.db.models import AuditEvent, NdaSignature, NdaSignatureContext
from broker.domain.principals import OPERATOR
from broker.services import admin
from broker.services.ndas import has_signed, library

NDA = "acme-research-nda"
SIGN = f"/api/v1/ndas/{NDA}/signatures"


def current(client, version=None):
    query = f"?version={version}" if version else ""
    return client.get(f"/api/v1/ndas/{NDA}{query}").json


def sign(client, person, text, name="Ada Lovelace", **extra):
    body = {"version": text["version"], "sha256": text["sha256"], "typed_name": name, **extra}
    return client.post(SIGN, json=body, headers={**person.auth, "User-Agent": "escrow-test/1"})


def count(escrow, model):
    with escrow.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(model))


def test_texts_are_public_and_shown_byte_for_byte(client, policy_dir, write_nda, make_nda):
    v2 = write_nda("acme-research-nda-v2.md", make_nda("2"))
    raw_v1 = (policy_dir / "ndas" / "acme-research-nda-v1.md").read_bytes()

    listed = client.get("/api/v1/ndas").json["ndas"]
    assert [(n["id"], n["latest_version"]) for n in listed] == [(NDA, "2")]
    assert listed[0]["versions"] == [
        {"version": "1", "sha256": hashlib.sha256(raw_v1).hexdigest()},
        {"version": "2", "sha256": hashlib.sha256(v2).hexdigest()},
    ]
    latest, first = current(client), current(client, "1")
    assert latest["text"].encode() == v2 and latest["version"] == "2"
    assert first["text"].encode() == raw_v1
    assert first["sha256"] == hashlib.sha256(raw_v1).hexdigest()
    assert (first["organisation"], first["size"]) == ("acme-ai", len(raw_v1))


def test_an_unknown_nda_or_version_is_not_found(client, ada):
    assert client.get("/api/v1/ndas/no-such-nda").status_code == 404
    missing = client.get(f"/api/v1/ndas/{NDA}?version=9")
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"
    assert "has no version '9'" in missing.json["detail"]
    body = {"version": "9", "sha256": "0" * 64, "typed_name": "Ada Lovelace"}
    assert client.post(SIGN, json=body, headers=ada.auth).status_code == 404
    assert client.post("/api/v1/ndas/no-such-nda/signatures", json=body,
                       headers=ada.auth).status_code == 404


def test_a_signature_records_the_text_hash_and_keeps_personal_data_apart(client, escrow, ada):
    text = current(client)

    signed = sign(client, ada, text, name="  Ada   Lovelace ")

    assert signed.status_code == 201, signed.json
    assert (signed.json["nda"], signed.json["version"], signed.json["sha256"]) == (
        NDA, "1", text["sha256"])
    assert signed.json["created"] is True and signed.json["ssh_signature"] is None
    with escrow.uow() as uow:
        row = uow.session.scalar(select(NdaSignature))
        assert (row.user_id, row.text_sha256) == (ada.user_id, text["sha256"])
        context = uow.session.get(NdaSignatureContext, row.id)
        assert context.typed_name == "Ada Lovelace"
        assert context.ip == "127.0.0.1"
        assert context.user_agent == "escrow-test/1"
        assert has_signed(uow, ada.user_id, library(escrow.settings.policy_dir).get(NDA))
        leaf = uow.session.scalar(
            select(AuditEvent.leaf).where(AuditEvent.action == "nda.signed")).decode()
        signature_id = str(row.id)
    event = json.loads(leaf)
    assert event["subject"]["user"] == str(ada.user_id)
    assert len(event["subject"]["user_commitment"]) == 64
    assert event["details"] == {"nda": NDA, "version": "1", "sha256": text["sha256"],
                                "signature": signature_id}
    for personal in ("Ada", "Lovelace", "ada@", "127.0.0.1", "escrow-test"):
        assert personal not in leaf
    mine = client.get("/api/v1/me/nda-signatures", headers=ada.auth).json["signatures"]
    assert [(s["nda"], s["sha256"]) for s in mine] == [(NDA, text["sha256"])]


def test_signing_the_same_text_again_changes_nothing_but_may_add_an_ssh_signature(
        client, escrow, ada, tmp_path, ssh_keygen, prove_ssh_key, sign_with_ssh):
    text = current(client)
    first = sign(client, ada, text).json
    again = sign(client, ada, text, name="A. Lovelace")
    assert again.status_code == 200
    assert again.json["id"] == first["id"] and again.json["created"] is False
    assert count(escrow, NdaSignature) == 1
    with escrow.uow() as uow:
        assert uow.session.scalar(select(NdaSignatureContext)).typed_name == "Ada Lovelace"
        assert uow.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "nda.signed")) == 1

    key = ssh_keygen(tmp_path / "id_ed25519")
    key_id = prove_ssh_key(ada, key)
    added = sign(client, ada, text, ssh_signature=sign_with_ssh(key, text["text"].encode()))
    assert (added.status_code, added.json["id"], added.json["ssh_key"]) == (
        200, first["id"], key_id)


def test_a_new_version_or_a_changed_text_needs_a_new_signature(
        client, escrow, ada, policy_dir, write_nda, make_nda):
    v1 = current(client)
    sign(client, ada, v1)
    write_nda("acme-research-nda-v2.md", make_nda("2"))
    texts = library(escrow.settings.policy_dir)
    with escrow.uow() as uow:
        assert has_signed(uow, ada.user_id, texts.get(NDA, "1"))
        assert not has_signed(uow, ada.user_id, texts.get(NDA, "2"))
    assert sign(client, ada, current(client)).status_code == 201
    assert count(escrow, NdaSignature) == 2

    # an edit of version 1's file is another text: the old signature does not cover it
    path = policy_dir / "ndas" / "acme-research-nda-v1.md"
    path.write_bytes(path.read_bytes().replace(b"72 hours", b"7 days"))
    with escrow.uow() as uow:
        assert not has_signed(uow, ada.user_id, library(escrow.settings.policy_dir).get(NDA, "1"))
    assert sign(client, ada, current(client, "1")).status_code == 201


def test_a_bad_name_or_a_hash_other_than_the_current_text_is_refused(client, escrow, ada):
    text = current(client)
    for name in ["", "   ", None, 42, "x" * 201, "Ada\u202eLovelace"]:
        refused = sign(client, ada, text, name=name)
        assert refused.status_code == 422, name
        assert "typed_name" in refused.json["detail"]
    stale = sign(client, ada, {**text, "sha256": hashlib.sha256(b"older").hexdigest()})
    assert stale.status_code == 409
    assert "is not the text you read" in stale.json["detail"]
    assert sign(client, ada, {**text, "sha256": "abc"}).status_code == 422
    no_version = client.post(SIGN, json={"sha256": text["sha256"], "typed_name": "Ada"},
                             headers=ada.auth)
    assert no_version.status_code == 422
    assert count(escrow, NdaSignature) == 0
    assert sign(client, ada, text, name="x" * 200).status_code == 201


def test_only_a_person_logged_in_signs(client, escrow):
    with escrow.uow() as uow:
        admin.create_org(uow, OPERATOR, "acme-ai")
    with escrow.uow() as uow:
        token = admin.create_token(uow, OPERATOR, "acme-ai", "reviewer", days=1).token
    text = current(client)
    body = {"version": text["version"], "sha256": text["sha256"], "typed_name": "Robot"}
    assert client.post(SIGN, json=body).status_code == 401
    assert client.post(SIGN, json=body,
                       headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get("/api/v1/me/nda-signatures").status_code == 401
    assert count(escrow, NdaSignature) == 0


def test_an_ssh_signature_is_verified_stored_and_verifies_offline_with_ssh_keygen(
        client, escrow, ada, tmp_path, ssh_keygen, prove_ssh_key, sign_with_ssh):
    key = ssh_keygen(tmp_path / "id_ed25519")
    key_id = prove_ssh_key(ada, key)
    text = current(client)
    raw = text["text"].encode()

    signed = sign(client, ada, text, ssh_signature=sign_with_ssh(key, raw))

    assert signed.status_code == 201, signed.json
    stored = signed.json
    assert stored["ssh_key"] == key_id
    with escrow.uow() as uow:
        row = uow.session.scalar(select(NdaSignature))
        assert (row.ssh_key_id, row.ssh_signature) == (key_id, stored["ssh_signature"])
        leaf = uow.session.scalar(
            select(AuditEvent.leaf).where(AuditEvent.action == "nda.signed"))
    assert json.loads(leaf)["details"]["ssh_key"] == key_id
    # an auditor re-verifies offline, from what the broker stored and the text's bytes
    (tmp_path / "allowed_signers").write_text(stored["allowed_signers"] + "\n")
    (tmp_path / "signature.sig").write_text(stored["ssh_signature"])
    verified = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed_signers"),
         "-I", f"user-{ada.user_id}", "-n", "escrow-nda", "-s", str(tmp_path / "signature.sig")],
        input=raw, capture_output=True)
    assert verified.returncode == 0, verified.stderr
    assert b"Good" in verified.stdout + verified.stderr


def test_ssh_signatures_over_other_bytes_by_other_keys_or_namespaces_are_refused(
        client, escrow, ada, login, tmp_path, ssh_keygen, prove_ssh_key, sign_with_ssh):
    mine = ssh_keygen(tmp_path / "mine")
    prove_ssh_key(ada, mine)
    unproven = ssh_keygen(tmp_path / "unproven")
    prove_ssh_key(ada, unproven, prove=False)
    stranger = ssh_keygen(tmp_path / "stranger")
    bobs = ssh_keygen(tmp_path / "bobs")
    prove_ssh_key(login("bob@uni.example", "Bob"), bobs)
    text = current(client)
    raw = text["text"].encode()

    cases = {
        "does not verify over these": sign_with_ssh(mine, raw + b"\n"),
        "namespace 'file'": sign_with_ssh(mine, raw, namespace="file"),
        "not a proven ssh-ed25519 key of yours": sign_with_ssh(stranger, raw),
        "not a proven": sign_with_ssh(unproven, raw),
        "of yours": sign_with_ssh(bobs, raw),
        "not armored": "garbage",
    }
    for expected, signature in cases.items():
        refused = sign(client, ada, text, ssh_signature=signature)
        assert refused.status_code == 422, expected
        assert refused.mimetype == "application/problem+json"
        assert expected in refused.json["detail"]
        assert "ssh-keygen -Y sign -n escrow-nda" in refused.json["hint"] or "escrow keys" in \
            refused.json["hint"]
    assert count(escrow, NdaSignature) == 0
