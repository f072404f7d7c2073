"""Abandoned multipart uploads are listed, then aborted and freed after a set age, on the local
store and on S3 (moto over HTTP); recent uploads of open deposits are kept; each abort is an
audit event."""

from __future__ import annotations

import json
import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from api_deposit import depositor_token
from click.testing import CliRunner
from durability_support import audit_events

from broker.adapters.objectstore.s3 import S3Store
from broker.cli import main
from broker.services.uploads import gc_uploads, parse_age

WEEK = timedelta(days=7)


def open_two_uploads(client, escrow) -> tuple[dict, dict]:
    """A deposit with two files, each upload started and one part (or none) received."""
    auth = {"Authorization": f"Bearer {depositor_token(escrow)}"}
    opened = client.post(
        "/api/v1/deposits",
        headers=auth,
        json={
            "model": "acme-ai/gpt-small",
            "version": "2024-05",
            "files": [{"path": "old.bin", "size": 100}, {"path": "new.bin", "size": 100}],
        },
    )
    assert opened.status_code == 200, opened.json
    made = opened.json
    for item in made["files"]:
        base = f"/api/v1/deposits/{made['deposit_id']}/files/{item['index']}"
        assert client.post(base + "/upload", headers=auth, json={}).status_code == 200
        if item["path"] == "old.bin":
            [url] = client.post(base + "/parts", headers=auth, json={"numbers": [1]}).json["parts"]
            body = os.urandom(100 + 16 + 16)
            assert client.put(urlsplit(url["url"]).path, data=body).status_code == 200
    return made, auth


def staged(escrow) -> dict[str, str]:
    """upload id -> key of every upload the local store holds."""
    root = Path(escrow.settings.data_dir) / "staging"
    return {
        d.name: json.loads((d / "upload.json").read_text())["key"]
        for d in root.iterdir()
        if (d / "upload.json").exists()
    }


def age_upload(escrow, upload_id: str, days: int) -> None:
    """Make a staged upload look idle for `days` (its creation and its parts' times)."""
    directory = Path(escrow.settings.data_dir) / "staging" / upload_id
    meta = json.loads((directory / "upload.json").read_text())
    then = time.time() - days * 86400
    meta["created"] = int(then)
    (directory / "upload.json").write_text(json.dumps(meta))
    for item in directory.iterdir():
        os.utime(item, (then, then))
    age_deposit(escrow, meta["key"], days)


def age_deposit(escrow, key: str, days: int) -> None:
    """The deposit an upload's key names was opened `days` ago (an upload is never older than
    its deposit, whatever the store's clock says)."""
    from sqlalchemy import update

    from broker.adapters.db.models import Deposit

    with escrow.uow() as uow:
        uow.session.execute(update(Deposit).where(Deposit.id == key.split("/")[1]).values(
            created_at=datetime.now(UTC) - timedelta(days=days)))
        uow.commit()


def test_an_idle_upload_is_listed_then_aborted_and_a_recent_one_kept(escrow, client):
    made, _auth = open_two_uploads(client, escrow)
    uploads = staged(escrow)
    old_index = next(f["index"] for f in made["files"] if f["path"] == "old.bin")
    old_key = f"deposits/{made['deposit_id']}/files/{old_index}.payload"
    [old_id] = [u for u, key in uploads.items() if key == old_key]
    age_upload(escrow, old_id, days=8)

    listed = gc_uploads(escrow, WEEK, dry_run=True)

    assert [(u.copy, u.deposit, u.path, u.upload_id) for u in listed] == [
        ("primary", made["deposit_id"], "old.bin", old_id)
    ]
    assert listed[0].age_s >= 8 * 86400 - 60 and listed[0].bytes == 132
    assert listed[0].deposit_state == "open" and not listed[0].aborted
    assert staged(escrow) == uploads  # a dry run aborts nothing
    assert audit_events(escrow, "deposit.upload_aborted") == []

    done = gc_uploads(escrow, WEEK, dry_run=False)

    assert [(u.upload_id, u.aborted, u.error) for u in done] == [(old_id, True, "")]
    assert old_id not in staged(escrow)  # its parts are freed
    assert len(staged(escrow)) == 1  # the recent upload of the open deposit is kept
    [event] = audit_events(escrow, "deposit.upload_aborted")
    assert event["subject"]["deposit"] == made["deposit_id"]
    assert event["details"]["upload_id"] == old_id and event["details"]["path"] == "old.bin"
    assert event["details"]["bytes"] == 132
    assert gc_uploads(escrow, WEEK) == []  # nothing left to abort


def test_the_cli_lists_what_it_aborts(escrow, client, monkeypatch):
    made, _auth = open_two_uploads(client, escrow)
    for upload_id in staged(escrow):
        age_upload(escrow, upload_id, days=3)
    monkeypatch.setenv("ESCROW_DATA_DIR", str(escrow.settings.data_dir))
    monkeypatch.setenv("ESCROW_DATABASE_URL", escrow.settings.database_url)

    kept = CliRunner().invoke(main, ["admin", "uploads", "gc", "--older-than", "7d"])
    assert kept.exit_code == 0, kept.output
    assert "0 upload(s) idle for 7d or more" in kept.output and len(staged(escrow)) == 2

    dry = CliRunner().invoke(main, ["admin", "uploads", "gc", "--older-than", "2d", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "2 upload(s) idle for 2d or more; would abort:" in dry.output
    assert f"deposit {made['deposit_id']} file old.bin" in dry.output
    assert "idle 3d, 132 bytes" in dry.output and "new.bin" in dry.output
    assert len(staged(escrow)) == 2

    ran = CliRunner().invoke(main, ["admin", "uploads", "gc", "--older-than", "2d", "--json"])
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.output.strip().splitlines()[-1])
    assert result["freed_bytes"] == 132
    assert sorted(u["path"] for u in result["uploads"]) == ["new.bin", "old.bin"]
    assert all(u["aborted"] for u in result["uploads"])
    assert staged(escrow) == {}
    assert len(audit_events(escrow, "deposit.upload_aborted")) == 2

    bad = CliRunner().invoke(main, ["admin", "uploads", "gc", "--older-than", "soon"])
    assert bad.exit_code != 0 and "write e.g. 7d" in bad.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7d", timedelta(days=7)), ("12h", timedelta(hours=12)), ("90s", timedelta(seconds=90))],
)
def test_ages_are_a_number_and_a_unit(text: str, expected: timedelta) -> None:
    assert parse_age(text) == expected


def test_s3_uploads_are_listed_and_aborted(moto_endpoint, escrow) -> None:
    """ListMultipartUploads on a real S3 server: an idle upload goes, with its bytes counted."""
    bucket = f"escrow-{secrets.token_hex(4)}"
    raw = moto_endpoint.client("s3")
    raw.create_bucket(Bucket=bucket)
    store = S3Store(
        bucket, "escrow", endpoint_url=moto_endpoint.url, session=moto_endpoint.session()
    )
    key = "deposits/d0000000000000000000000000000001/files/0.payload"
    upload_id = store.create_multipart(key)
    store._upload_part(key, upload_id, 1, b"x" * 1000)
    other = store.create_multipart("audit/entries/1-2")

    pending = store.list_multipart_uploads("")
    assert sorted((u.key, u.upload_id, u.size) for u in pending) == [
        ("audit/entries/1-2", other, 0),
        (key, upload_id, 1000),
    ]
    assert all(u.last_activity <= datetime.now(UTC) + timedelta(minutes=1) for u in pending)

    escrow.store = store
    done = gc_uploads(escrow, timedelta(0))  # everything counts as idle

    assert sorted((u.key, u.aborted) for u in done) == [("audit/entries/1-2", True), (key, True)]
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert store.list_multipart_uploads("") == []
    events = audit_events(escrow, "deposit.upload_aborted")
    assert sorted(e["subject"].get("deposit") or e["subject"]["object"] for e in events) == [
        "audit/entries/1-2",
        "d0000000000000000000000000000001",
    ]


def test_a_new_upload_of_an_open_deposit_is_kept_whatever_the_stores_clock_says(
    moto_endpoint, escrow, client
) -> None:
    """moto reports every upload as initiated in 2010: the worker's gc, which runs as it
    starts, must not abort a deposit's upload made a moment ago (it did, mid-deposit)."""
    made, _auth = open_two_uploads(client, escrow)  # the deposit, opened just now
    bucket = f"escrow-{secrets.token_hex(4)}"
    moto_endpoint.client("s3").create_bucket(Bucket=bucket)
    escrow.store = S3Store(
        bucket, "escrow", endpoint_url=moto_endpoint.url, session=moto_endpoint.session()
    )
    escrow.store.create_multipart(f"deposits/{made['deposit_id']}/files/0.payload")
    [listed] = escrow.store.list_multipart_uploads("")
    assert datetime.now(UTC) - listed.last_activity > WEEK  # the store's word for it
    assert gc_uploads(escrow, WEEK) == []
    assert len(escrow.store.list_multipart_uploads("")) == 1
