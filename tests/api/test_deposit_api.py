import base64
import json

from sqlalchemy import select

from broker import age
from broker.adapters.db.models import AuditEvent
from broker.services.worker import run_pending

FILES = {"config.json": b'{"layers": 2}', "model.safetensors": bytes(range(256)) * 1000,
         "empty.bin": b""}


def deposit_all(lab, files=FILES, **extra):
    deposit = lab.open(files, **extra)
    for path, data in files.items():
        response = lab.upload(deposit, path, data)
        assert response.status_code == 200, response.json
    finalized = lab.post(f"/api/v1/deposits/{deposit['deposit_id']}/finalize")
    assert finalized.status_code == 202, finalized.json
    return deposit


def actions(escrow) -> list[str]:
    with escrow.uow() as uow:
        return list(uow.session.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)))


def test_a_deposit_is_sealed_with_a_signed_manifest_after_the_worker_verifies_it(escrow, lab):
    deposit = deposit_all(lab)
    assert deposit["recipient"].startswith("age1pq1")  # post-quantum by default
    assert run_pending(escrow) == len(FILES)
    shown = lab.get(f"/api/v1/deposits/{deposit['deposit_id']}").json
    assert shown["state"] == "sealed"
    prefix = f"deposits/{deposit['deposit_id']}/"
    manifest = json.loads(escrow.store.get_bytes(prefix + "manifest.json"))
    assert [f["path"] for f in manifest["files"]] == sorted(FILES)
    for entry in manifest["files"]:
        header = escrow.store.get_bytes(prefix + entry["header"])
        payload = escrow.store.get_bytes(prefix + entry["payload"])
        assert header.startswith(b"age-encryption.org/v1\n")
        assert len(payload) == 16 + entry["size"] + 16 * max(1, -(-entry["size"] // 65536))
    signature = json.loads(escrow.store.get_bytes(prefix + "manifest.sig"))
    keys = lab.client.get("/api/v1/keys").json
    assert signature["key_id"] == keys["manifest"]["key_id"]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(base64.b64decode(keys["manifest"]["public_key"])).verify(
        base64.b64decode(signature["signature"]), escrow.store.get_bytes(prefix + "manifest.json"))
    assert {"deposit.created", "deposit.file_uploaded", "deposit.finalized", "deposit.sealed",
            "deposit.verification_passed"} <= set(actions(escrow))


def test_the_stored_header_and_payload_decrypt_with_the_escrow_identity(escrow, lab):
    from broker.adapters.db.models import Deposit
    from broker.services.deposits import deposit_identity

    deposit = deposit_all(lab)
    run_pending(escrow)
    with escrow.uow() as uow:
        identity = deposit_identity(escrow, uow.session.get(Deposit, deposit["deposit_id"]))
    import io

    prefix = f"deposits/{deposit['deposit_id']}/"
    manifest = json.loads(escrow.store.get_bytes(prefix + "manifest.json"))
    for entry in manifest["files"]:
        whole = (escrow.store.get_bytes(prefix + entry["header"])
                 + escrow.store.get_bytes(prefix + entry["payload"]))
        out = io.BytesIO()
        age.decrypt(io.BytesIO(whole), out, [identity])
        assert out.getvalue() == FILES[entry["path"]]


def test_a_classical_deposit_gets_an_x25519_recipient(lab):
    deposit = lab.open({"a": b"x"}, classical=True)
    assert deposit["recipient"].startswith("age1") and not deposit["recipient"].startswith(
        "age1pq1")
    assert deposit["classical"] is True


def test_a_classical_extra_recipient_marks_a_hybrid_deposit_classical(lab):
    lab_key = age.generate_x25519_identity().to_recipient()
    deposit = lab.open({"a": b"x"}, extra_recipients=[str(lab_key)])
    assert deposit["recipient"].startswith("age1pq1")
    assert deposit["classical"] is True


def test_a_header_not_addressed_to_the_deposit_is_refused(lab):
    deposit = lab.open({"a": b"data"})
    stranger = age.generate_hybrid_identity().to_recipient()
    header, _ = lab.encrypt(str(stranger), b"data")
    response = lab.upload(deposit, "a", b"data", header=header)
    assert response.status_code == 422
    assert "does not open with this deposit's escrow identity" in response.json["detail"]
    assert deposit["recipient"] in response.json["hint"]


def test_a_truncated_payload_is_refused_at_completion(lab):
    deposit = lab.open({"a": b"data"})
    _, payload = lab.encrypt(deposit["recipient"], b"data")
    response = lab.upload(deposit, "a", b"data", payload=payload[:-1])
    assert response.status_code == 422
    assert "part 1 is" in response.json["detail"] and "expected" in response.json["detail"]


def test_one_flipped_byte_in_a_stored_payload_fails_verification_naming_the_file(escrow, lab):
    files = {"good.bin": b"good", "bad.bin": b"bad!"}
    deposit = lab.open(files)
    for path, data in files.items():
        lab.upload(deposit, path, data)
    bad_index = next(f["index"] for f in deposit["files"] if f["path"] == "bad.bin")
    key = f"deposits/{deposit['deposit_id']}/files/{bad_index}.payload"
    stored = bytearray(escrow.store.get_bytes(key))
    stored[20] ^= 1
    escrow.store.put_bytes(key, bytes(stored))
    lab.post(f"/api/v1/deposits/{deposit['deposit_id']}/finalize")
    run_pending(escrow)
    shown = lab.get(f"/api/v1/deposits/{deposit['deposit_id']}").json
    assert shown["state"] == "failed"
    assert "bad.bin" in shown["failure"] and "good.bin" not in shown["failure"]
    assert "deposit.verification_failed" in actions(escrow)


def test_finalize_refuses_a_deposit_with_files_not_uploaded(lab):
    deposit = lab.open({"a": b"1", "b": b"2"})
    lab.upload(deposit, "a", b"1")
    response = lab.post(f"/api/v1/deposits/{deposit['deposit_id']}/finalize")
    assert response.status_code == 409
    assert "b" in response.json["detail"] and "escrow deposit" in response.json["hint"]


def test_a_sealed_version_refuses_different_files_and_returns_itself_for_the_same(escrow, lab):
    deposit_all(lab)
    run_pending(escrow)
    same = lab.open(FILES)
    assert same["state"] == "sealed"
    response = lab.post("/api/v1/deposits", {"model": "acme-ai/gpt-small", "version": "2024-05",
                                             "files": [{"path": "other", "size": 1}]})
    assert response.status_code == 409
    assert "immutable" in response.json["hint"]


def test_an_unknown_organisation_is_a_clear_404_or_403(lab):
    response = lab.post("/api/v1/deposits", {"model": "nobody/x", "version": "1", "files": []})
    assert response.status_code == 403  # the token's org is not 'nobody': refused before lookup
    assert "nobody" in response.json["detail"]


def test_bad_file_paths_are_refused_before_anything_is_created(escrow, lab):
    for path in ["../x", "/etc/passwd", "a\\b"]:
        response = lab.post("/api/v1/deposits", {"model": "acme-ai/m", "version": "1",
                                                 "files": [{"path": path, "size": 1}]})
        assert response.status_code == 422, path
        assert response.mimetype == "application/problem+json"
    assert "deposit.created" not in actions(escrow)


def test_part_urls_are_only_issued_for_parts_of_the_upload(lab):
    deposit = lab.open({"a": b"1"})
    base = f"/api/v1/deposits/{deposit['deposit_id']}/files/0"
    lab.post(base + "/upload")
    assert lab.post(base + "/parts", {"numbers": [2]}).status_code == 422
    assert lab.post(base + "/parts", {"numbers": [0]}).status_code == 422
    assert lab.post(base + "/parts", {"numbers": [1]}).status_code == 200


def test_an_upload_the_store_lost_is_started_over_and_said_so(escrow, lab, tmp_path):
    """Issue 14 item 2: the store forgets an upload (here the local store's staging directory
    is removed, as an S3 lifecycle rule aborts an upload): presigning says "upload lost" and
    resets the file; starting it again gives a new, empty upload, and the log records it."""
    import shutil

    deposit = lab.open({"w.bin": b"x" * 1000})
    base = f"/api/v1/deposits/{deposit['deposit_id']}/files/0"
    header, _payload = lab.encrypt(deposit["recipient"], b"x" * 1000)
    first = lab.post(base + "/upload").json
    assert first["upload"] and first["upload_lost"] is False
    registered = lab.client.put(base + "/header", headers=lab.auth,
                                json={"header": base64.b64encode(header).decode()})
    assert registered.status_code == 200, registered.json
    again = lab.post(base + "/upload").json
    assert again["upload"] == first["upload"] and again["header_registered"]
    for staged in (escrow.settings.data_dir / "staging").iterdir():
        shutil.rmtree(staged)

    refused = lab.post(base + "/parts", {"numbers": [1]})
    assert refused.status_code == 409 and refused.json["title"] == "upload lost"
    assert "no longer has the upload of 'w.bin'" in refused.json["detail"]
    assert "new key" in refused.json["hint"]
    restarted = lab.post(base + "/upload").json
    assert restarted["upload"] != first["upload"] and restarted["parts"] == []
    assert restarted["header_registered"] is False and restarted["upload_lost"] is False
    assert lab.post(base + "/parts", {"numbers": [1]}).status_code == 200
    assert actions(escrow).count("deposit.upload_lost") == 1


def test_starting_an_upload_the_store_lost_heals_it_at_once(escrow, lab):
    import shutil

    deposit = lab.open({"w.bin": b"x" * 1000})
    base = f"/api/v1/deposits/{deposit['deposit_id']}/files/0"
    first = lab.post(base + "/upload").json
    for staged in (escrow.settings.data_dir / "staging").iterdir():
        shutil.rmtree(staged)

    healed = lab.post(base + "/upload").json

    assert healed["upload_lost"] is True and healed["upload"] != first["upload"]
    assert healed["parts"] == [] and healed["header_registered"] is False
    assert lab.post(base + "/parts", {"numbers": [1]}).status_code == 200
    assert actions(escrow).count("deposit.upload_lost") == 1


def test_files_the_store_lost_before_finalising_are_reset_and_uploaded_again(escrow, lab):
    """A store restored from an older backup: uploaded files whose objects are gone are not
    sent to verification (which would fail the deposit for good) but reset, with a message."""
    deposit = lab.open(FILES)
    for path, data in FILES.items():
        assert lab.upload(deposit, path, data).status_code == 200
    index = next(f["index"] for f in deposit["files"] if f["path"] == "model.safetensors")
    escrow.store.delete(f"deposits/{deposit['deposit_id']}/files/{index}.payload")

    refused = lab.post(f"/api/v1/deposits/{deposit['deposit_id']}/finalize")
    assert refused.status_code == 409
    assert "no longer has 1 uploaded file(s) (model.safetensors)" in refused.json["detail"]
    assert "run the same `escrow deposit` command again" in refused.json["hint"]
    shown = {f["path"]: f["state"] for f in lab.get(
        f"/api/v1/deposits/{deposit['deposit_id']}").json["files"]}
    assert shown == {"config.json": "uploaded", "model.safetensors": "pending",
                     "empty.bin": "uploaded"}
    assert "deposit.upload_lost" in actions(escrow)

    assert lab.upload(deposit, "model.safetensors", FILES["model.safetensors"]).status_code == 200
    assert lab.post(f"/api/v1/deposits/{deposit['deposit_id']}/finalize").status_code == 202
    assert run_pending(escrow) == len(FILES)
    assert lab.get(f"/api/v1/deposits/{deposit['deposit_id']}").json["state"] == "sealed"


def test_an_open_larger_than_the_default_body_limit_may_carry_an_idempotency_key(escrow, lab):
    """The route's own limit (8 MiB) holds before the Idempotency-Key hook reads the body."""
    files = [{"path": f"shards/model-{i:05}-of-30000.safetensors", "size": 1}
             for i in range(30000)]
    body = {"model": "acme-ai/gpt-small", "version": "1", "files": files}
    headers = {**lab.auth, "Idempotency-Key": "open-acme-gpt-small-1"}
    first = lab.client.post("/api/v1/deposits", json=body, headers=headers)
    assert first.status_code == 200, first.json
    assert first.request.content_length > 1024 * 1024
    again = lab.client.post("/api/v1/deposits", json=body, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["deposit_id"] == first.json["deposit_id"]
