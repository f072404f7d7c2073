"""A second copy in another directory (ESCROW_MIRROR_URL=file:///…): filled at sealing, checked
by fixity, each copy repaired from the other, and enough to recover the deployment from."""

from __future__ import annotations

from pathlib import Path

import pytest
from durability_support import audit_events, payload_key, rot_on_disk

from broker.adapters.db.models import StoredObject
from broker.domain.principals import OPERATOR
from broker.errors import ConfigError
from broker.services import audit
from broker.services.fixity import run_fixity


@pytest.fixture
def mirror_root(tmp_path: Path) -> Path:
    return tmp_path / "mirror"


@pytest.fixture
def mirror_url(mirror_root: Path) -> str:
    return mirror_root.as_uri()


def deposit_keys(store, deposit: dict) -> list[str]:
    return store.list_keys(f"deposits/{deposit['deposit_id']}/")


def test_sealing_copies_every_object_to_the_mirror(escrow, sealed):
    keys = deposit_keys(escrow.store, sealed)
    assert len(keys) == 7 and deposit_keys(escrow.mirror, sealed) == keys
    for key in keys:
        assert escrow.mirror.get_bytes(key) == escrow.store.get_bytes(key)
    assert escrow.mirror.list_keys("keys/") == escrow.store.list_keys("keys/") != []
    [event] = audit_events(escrow, "deposit.mirrored")
    assert event["subject"]["deposit"] == sealed["deposit_id"]
    assert event["details"]["objects"] == 7 and event["details"]["bytes"] > 81_000
    with escrow.uow() as uow:
        rows = uow.session.query(StoredObject).all()
        assert sorted((r.copy, r.key) for r in rows) == sorted(
            (copy, key) for copy in ("primary", "mirror") for key in keys)


@pytest.mark.parametrize(("bad", "good"), [("mirror", "primary"), ("primary", "mirror")])
def test_a_corrupt_copy_is_repaired_from_the_good_one(escrow, sealed, mirror_root, bad, good):
    key = payload_key(sealed)
    roots = {"primary": escrow.store.objects_root, "mirror": mirror_root}
    rot_on_disk(roots[bad], key)
    report = run_fixity(escrow, OPERATOR)
    assert report.ok
    result = report.deposits[0]
    assert result.copies == ["primary", "mirror"]
    [repair] = result.repairs
    assert (repair.name, repair.key, repair.copy, repair.source) == (
        "model.safetensors", key, bad, good)
    assert "does not decrypt" in repair.problem
    assert escrow.store.get_bytes(key) == escrow.mirror.get_bytes(key)
    [event] = audit_events(escrow, "fixity.repaired")
    assert event["subject"] == {"deposit": sealed["deposit_id"], "path": "model.safetensors",
                                "model": "acme-ai/gpt-small", "version": "2024-05"}
    assert event["details"]["copy"] == bad and event["details"]["source"] == good
    assert audit_events(escrow, "fixity.passed")[0]["details"]["repaired"] == 1
    again = run_fixity(escrow, OPERATOR)
    assert again.ok and again.deposits[0].repairs == []


def test_a_missing_mirror_object_is_found_by_checksums_and_copied_again(escrow, sealed):
    key = payload_key(sealed)
    escrow.mirror.delete(key)
    report = run_fixity(escrow, OPERATOR, limit=0)
    result = report.deposits[0]
    assert report.ok and result.method == "full"
    assert [(f.copy, f.problem) for f in result.escalated] == [("mirror", "is missing")]
    assert [(r.copy, r.source) for r in result.repairs] == [("mirror", "primary")]
    assert escrow.mirror.get_bytes(key) == escrow.store.get_bytes(key)


def test_a_tampered_manifest_is_repaired_from_the_copy_whose_signature_holds(escrow, sealed):
    key = f"deposits/{sealed['deposit_id']}/manifest.json"
    good = escrow.store.get_bytes(key)
    escrow.store.put_bytes(key, good.replace(b"gpt-small", b"gpt-smoll"))
    report = run_fixity(escrow, OPERATOR)
    assert report.ok
    [repair] = report.deposits[0].repairs
    assert (repair.copy, repair.source) == ("primary", "mirror")
    assert "no manifest.sig verifies it" in repair.problem
    assert escrow.store.get_bytes(key) == good


def test_an_object_bad_in_both_copies_fails_the_deposit(escrow, sealed, mirror_root):
    key = payload_key(sealed)
    rot_on_disk(escrow.store.objects_root, key)
    rot_on_disk(mirror_root, key, offset=200)
    report = run_fixity(escrow, OPERATOR)
    assert not report.ok
    assert sorted(f.copy for f in report.deposits[0].problems) == ["mirror", "primary"]
    assert report.deposits[0].repairs == []
    [failed] = audit_events(escrow, "fixity.failed")
    assert {f["name"] for f in failed["details"]["files"]} == {"model.safetensors"}


def test_the_audit_log_and_keys_are_kept_in_the_mirror(escrow, sealed):
    # The seal signed a checkpoint and mirrored it (copies.after_seal); fixity keeps it there.
    mirrored = escrow.mirror.list_keys("audit/checkpoints/")
    assert mirrored and mirrored == escrow.store.list_keys("audit/checkpoints/")
    escrow.mirror.delete(mirrored[-1])
    report = run_fixity(escrow, OPERATOR)
    assert mirrored[-1] in report.mirror_copied
    assert escrow.mirror.list_keys("audit/") == escrow.store.list_keys("audit/")
    lost = escrow.store.list_keys("audit/entries/")[0]
    escrow.store.delete(lost)
    report = run_fixity(escrow, OPERATOR, limit=0)
    assert report.mirror_restored == [lost] and escrow.store.head(lost) is not None
    restored = [e for e in audit_events(escrow, "fixity.repaired") if e["subject"] == {
        "object": lost}]
    assert restored[0]["details"]["source"] == "mirror"


def test_the_deployment_can_be_recovered_from_the_mirror(escrow, sealed, mirror_url, tmp_path):
    from broker.services.recovery import recover
    from broker.services.setup import initialise

    with escrow.uow() as uow:
        signed = audit.sign_checkpoint(escrow, uow).size
    # The run mirrors that checkpoint, then signs and mirrors one covering its own events.
    size = run_fixity(escrow, OPERATOR, limit=0).checkpoint
    assert size > signed and escrow.mirror.head(f"audit/checkpoints/{size}") is not None
    settings = escrow.settings.with_overrides(
        storage_url=mirror_url, mirror_url="",
        database_url=f"sqlite:///{tmp_path / 'recovered.db'}")
    fresh, _ = initialise(settings)
    try:
        result = recover(fresh)
    finally:
        fresh.engine.dispose()
    assert result.deposits == [sealed["deposit_id"]]
    assert result.verified == {sealed["deposit_id"]: True}
    assert result.checkpoint == size


def test_a_mirror_that_is_the_primary_store_is_refused(settings):
    from broker.container import open_mirror

    same = settings.with_overrides(mirror_url=(settings.data_dir / "objects").as_uri())
    with pytest.raises(ConfigError, match="is the primary store itself"):
        open_mirror(same)


def test_the_command_and_the_operator_page_show_a_repair(
    escrow, sealed, mirror_root, mirror_url, monkeypatch, operator_page
):
    from click.testing import CliRunner

    from broker.cli import main

    rot_on_disk(mirror_root, payload_key(sealed))
    monkeypatch.setenv("ESCROW_DATA_DIR", str(escrow.settings.data_dir))
    monkeypatch.setenv("ESCROW_DATABASE_URL", escrow.settings.database_url)
    monkeypatch.setenv("ESCROW_MIRROR_URL", mirror_url)
    result = CliRunner().invoke(main, ["fixity", "run", "--max-bytes-per-s", "0"])
    assert result.exit_code == 0, result.output
    assert (f"REPAIRED acme-ai/gpt-small@2024-05 ({sealed['deposit_id']}): model.safetensors "
            f"(mirror {payload_key(sealed)}): payload does not decrypt") in result.output
    assert "rewritten from the primary" in result.output
    assert "all intact, 1 object(s) repaired" in result.output
    page = operator_page()
    assert '<th scope="row">Mirror</th>' in page and page.count(">working</span>") == 4
    assert "all intact" in page and "1 object(s) repaired" in page


def test_a_seal_is_signed_into_a_checkpoint_the_mirror_holds(escrow, sealed):
    """A recovery from the mirror right after a seal loses none of the seal's events."""
    from sqlalchemy import select

    from broker.adapters.db.models import AuditEvent
    from broker.auditlog.checkpoint import parse_checkpoint

    with escrow.uow() as uow:
        sealed_at = uow.session.scalar(
            select(AuditEvent.seq).where(AuditEvent.action == "deposit.sealed")
        )
    keys = escrow.mirror.list_keys(audit.CHECKPOINT_PREFIX)
    newest = max(keys, key=lambda k: int(k.rsplit("/", 1)[1]))
    checkpoint = parse_checkpoint(escrow.mirror.get_bytes(newest).decode())
    assert checkpoint.size > sealed_at  # the seal's event (and deposit.mirrored) is covered
    assert audit.mirrored_size(escrow.mirror) >= checkpoint.size  # and its entries are there
