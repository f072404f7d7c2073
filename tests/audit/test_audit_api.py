"""The audit log over the API: signed checkpoints, proofs anyone can check, entries for
auditors, and events filtered to what each caller may see."""

from __future__ import annotations

import base64
import csv
import io
import json

from api_deposit import depositor_token

from broker.auditlog.checkpoint import verify_checkpoint
from broker.auditlog.proofs import leaf_hash, verify_consistency, verify_inclusion
from broker.domain.principals import OPERATOR
from broker.services import admin


def verifier_key(client) -> str:
    return client.get("/api/v1/keys").json["checkpoint"]["verifier_key"]


def log_some(escrow, *orgs: str) -> None:
    for org in orgs:
        with escrow.uow() as uow:
            admin.create_org(uow, OPERATOR, org)


def test_the_checkpoint_is_a_signed_c2sp_note_of_the_whole_log(escrow, client):
    log_some(escrow, "acme-ai")
    note = client.get("/api/v1/audit/checkpoint", headers={"Accept": "text/plain"})
    assert note.mimetype == "text/plain"
    checkpoint = verify_checkpoint(note.text, verifier_key(client))
    assert checkpoint.origin == escrow.settings.origin
    with escrow.uow() as uow:
        from broker.services import audit

        assert (checkpoint.size, checkpoint.root) == audit.head(uow)
    as_json = client.get("/api/v1/audit/checkpoint").json
    assert as_json == {"size": checkpoint.size, "note": note.text}


def test_a_checkpoint_is_kept_per_size_and_mirrored_to_the_object_store(escrow, client):
    first = client.get("/api/v1/audit/checkpoint").json
    assert escrow.store.get_bytes(f"audit/checkpoints/{first['size']}").decode() == first["note"]
    again = client.get(f"/api/v1/audit/checkpoint?size={first['size']}").json
    assert again == first
    missing = client.get("/api/v1/audit/checkpoint?size=99999")
    assert missing.status_code == 404 and "no checkpoint" in missing.json["detail"]


def test_a_new_checkpoint_is_signed_on_the_timer_not_on_every_append(escrow, client):
    first = client.get("/api/v1/audit/checkpoint").json
    log_some(escrow, "acme-ai")
    # the newest one is younger than ESCROW_CHECKPOINT_INTERVAL_S: it is served as it is
    assert client.get("/api/v1/audit/checkpoint").json == first


def test_consistency_proofs_between_two_checkpoints_verify(escrow, client):
    key = verifier_key(client)
    old = verify_checkpoint(client.get("/api/v1/audit/checkpoint").json["note"], key)
    log_some(escrow, "acme-ai", "beta-lab")
    new = client.get(f"/api/v1/audit/inclusion?seq={old.size + 1}").json  # signs on demand
    current = verify_checkpoint(new["checkpoint"], key)
    assert current.size == old.size + 2
    proof = client.get(f"/api/v1/audit/consistency?first={old.size}&second={current.size}").json
    verify_consistency(old.size, current.size, old.root, current.root,
                       [base64.b64decode(h) for h in proof["proof"]])


def test_an_inclusion_proof_by_sequence_or_leaf_hash_verifies(escrow, client, make_person):
    log_some(escrow, "acme-ai")
    auditor = make_person("audrey@audit.example", global_roles=("auditor",))
    event = client.get("/api/v1/audit/events?action=org.created", headers=auditor.auth).json
    leaf = base64.b64decode(event["events"][0]["leaf"])
    by_hash = client.get(f"/api/v1/audit/inclusion?leaf_hash={leaf_hash(leaf).hex()}").json
    by_seq = client.get(f"/api/v1/audit/inclusion?seq={event['events'][0]['seq']}").json
    assert by_hash == by_seq
    checkpoint = verify_checkpoint(by_seq["checkpoint"], verifier_key(client))
    verify_inclusion(by_seq["seq"], checkpoint.size, leaf_hash(leaf),
                     [base64.b64decode(h) for h in by_seq["proof"]], checkpoint.root)


def test_bad_proof_questions_get_a_clear_answer(client):
    size = client.get("/api/v1/audit/checkpoint").json["size"]
    far = client.get(f"/api/v1/audit/consistency?first={size + 5}&second={size + 9}")
    assert far.status_code == 400 and f"the log has {size} entries" in far.json["detail"]
    words = client.get("/api/v1/audit/inclusion?seq=abc")
    assert words.status_code == 400 and "not a whole number" in words.json["detail"]
    short = client.get("/api/v1/audit/inclusion?leaf_hash=abcd")
    assert short.status_code == 400 and "64 hex digits" in short.json["detail"]


def test_entries_are_the_exact_leaves_and_only_auditors_read_them(escrow, client, make_person):
    log_some(escrow, "acme-ai")
    auditor = make_person("audrey@audit.example", global_roles=("auditor",))
    researcher = make_person("rosa@uni.example")
    page = client.get("/api/v1/audit/entries?start=0&end=3", headers=auditor.auth).json
    assert [e["seq"] for e in page["entries"]] == [0, 1, 2]
    for entry in page["entries"]:
        assert leaf_hash(base64.b64decode(entry["leaf"])).hex() == entry["leaf_hash"]
    refused = client.get("/api/v1/audit/entries", headers=researcher.auth)
    assert refused.status_code == 403 and "auditor" in refused.json["detail"]
    too_many = client.get("/api/v1/audit/entries?start=0&end=5000", headers=auditor.auth)
    assert too_many.status_code == 400


def test_each_caller_sees_only_the_events_they_may(escrow, client, make_person):
    ada = make_person("ada@acme.example", (("acme-ai", "admin"),))
    olaf = make_person("olaf@other.example", (("other-lab", "admin"),))
    rosa = make_person("rosa@uni.example")
    auditor = make_person("audrey@audit.example", global_roles=("auditor",))

    def seen(person, query: str = "") -> list[dict]:
        answer = client.get(f"/api/v1/audit/events?limit=1000{query}", headers=person.auth)
        assert answer.status_code == 200, answer.json
        return answer.json["events"]

    def about(person, event: dict) -> bool:
        return str(person.user_id) in (event["subject"].get("user"), event["actor"]["id"])

    everything = seen(auditor)
    assert {e["seq"] for e in everything} == set(range(len(everything)))
    assert all(e["subject"].get("org") == "acme-ai" or about(ada, e) for e in seen(ada))
    assert any(e["action"] == "org.created" for e in seen(ada))
    assert all(e["subject"].get("org") == "other-lab" or about(olaf, e) for e in seen(olaf))
    mine = seen(rosa)
    assert mine and all(about(rosa, e) for e in mine)
    hidden = next(e["seq"] for e in everything if e["subject"].get("org") == "other-lab")
    assert client.get(f"/api/v1/audit/events/{hidden}", headers=ada.auth).status_code == 404
    assert client.get(f"/api/v1/audit/events/{hidden}", headers=auditor.auth).status_code == 200


def test_filters_and_paging(escrow, client, make_person):
    log_some(escrow, "acme-ai", "beta-lab", "gamma-lab")
    auditor = make_person("audrey@audit.example", global_roles=("auditor",))
    rosa = make_person("rosa@uni.example")
    get = lambda query: client.get(f"/api/v1/audit/events?{query}", headers=auditor.auth).json  # noqa: E731
    created = get("action=org.created")["events"]
    assert [e["subject"]["org"] for e in created] == ["gamma-lab", "beta-lab", "acme-ai"]
    assert [e["subject"]["org"] for e in get("action=org.created&org=beta-lab")["events"]] == [
        "beta-lab"]
    first = get("action=org.created&limit=2")
    assert len(first["events"]) == 2 and first["next_before"] == first["events"][-1]["seq"]
    rest = get(f"action=org.created&limit=2&before={first['next_before']}")
    assert [e["subject"]["org"] for e in rest["events"]] == ["acme-ai"]
    assert rest["next_before"] is None
    by_email = get("actor=rosa@uni.example")["events"]
    assert by_email and all(
        e["subject"].get("user") == str(rosa.user_id) or e["actor"]["id"] == str(rosa.user_id)
        for e in by_email)
    assert get("since=2999-01-01")["events"] == []
    bad = client.get("/api/v1/audit/events?since=yesterday", headers=auditor.auth)
    assert bad.status_code == 400 and "2026-11-01" in bad.json["hint"]


def test_export_as_json_lines_and_csv(escrow, client, make_person):
    log_some(escrow, "acme-ai")
    auditor = make_person("audrey@audit.example", global_roles=("auditor",))
    lines = client.get("/api/v1/audit/export?format=jsonl", headers=auditor.auth)
    assert lines.status_code == 200
    leaves = lines.data.decode().splitlines()
    seqs = [json.loads(leaf)["seq"] for leaf in leaves]
    assert seqs == sorted(seqs) and len(seqs) > 3
    entries = client.get("/api/v1/audit/entries?start=0&end=1", headers=auditor.auth).json
    assert leaves[0].encode() == base64.b64decode(entries["entries"][0]["leaf"])
    table = client.get("/api/v1/audit/export?format=csv&action=org.created", headers=auditor.auth)
    rows = list(csv.DictReader(io.StringIO(table.data.decode())))
    assert [r["org"] for r in rows] == ["acme-ai"] and rows[0]["action"] == "org.created"
    wrong = client.get("/api/v1/audit/export?format=xml", headers=auditor.auth)
    assert wrong.status_code == 400 and "jsonl" in wrong.json["hint"]


def test_events_about_a_deposit_name_its_model(escrow, client, make_person):
    token = depositor_token(escrow)
    opened = client.post("/api/v1/deposits", headers={"Authorization": f"Bearer {token}"},
                         json={"model": "acme-ai/gpt-small", "version": "2024-05",
                               "files": [{"path": "a.bin", "size": 3}]})
    assert opened.status_code == 200, opened.json
    with escrow.uow() as uow:
        uow.audit("test.about_deposit", OPERATOR, {"deposit": opened.json["deposit_id"]})
        uow.commit()
    ada = make_person("ada@acme.example", (("acme-ai", "admin"),))
    events = client.get("/api/v1/audit/events?model=acme-ai/gpt-small", headers=ada.auth).json
    about = {e["action"]: e["subject"] for e in events["events"]}
    assert {"deposit.created", "model.created", "test.about_deposit"} <= set(about)
    assert about["test.about_deposit"]["model"] == "acme-ai/gpt-small"
    assert about["test.about_deposit"]["version"] == "2024-05"
