"""`escrow fetch` against the real broker app over HTTP: round trips, tampering, resume."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from fetch_support import grant, seal

from broker.cli.fetch import fetch as fetch_command
from broker.client.fetch import (
    STATE_FILE,
    Fetcher,
    FetchOptions,
    FileIntegrityError,
    WrongIdentity,
    manifest_files,
    output_path,
    state_path,
)
from broker.client.http import BrokerClient, RetryPolicy
from broker.errors import TamperDetected

CHUNK = 64 * 1024
FILES = {
    "config.json": b'{"layers": 2}\n',
    "empty.bin": b"",
    "weights/part-1.safetensors": os.urandom(3 * CHUNK),  # three whole chunks
    "weights/nested/deep/part-2.safetensors": os.urandom(2 * CHUNK + 12345),
}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "client-config"
    monkeypatch.setenv("ESCROW_CONFIG_DIR", str(config))
    monkeypatch.setenv("ESCROW_CLIENT_RETRIES", "0")
    return config


@pytest.fixture
def granted(escrow, lab, researcher, broker_url, env):
    deposit = seal(escrow, lab, FILES)
    grant_id = grant(escrow, researcher, deposit["deposit_id"])
    return deposit, grant_id


def run_cli(broker_url: str, researcher, out: Path, *extra: str):
    result = CliRunner().invoke(fetch_command, [
        "acme-ai/gpt-small@2024-05", "--broker", broker_url, "--token", researcher.token,
        "--identity", str(researcher.identity_file), "--out", str(out), "--json", *extra])
    return result


def fetcher(broker_url: str, researcher, out: Path, **options) -> Fetcher:
    from broker.client import pins

    client = BrokerClient(broker_url, researcher.token, retry=RetryPolicy(attempts=1))
    pins.verify_broker(client)
    opts = {"identity_file": researcher.identity_file, **options}
    return Fetcher(client, FetchOptions("acme-ai/gpt-small@2024-05", out, **opts))


def objects(escrow, deposit_id: str) -> Path:
    return Path(escrow.settings.data_dir) / "objects" / "deposits" / deposit_id


def test_fetch_writes_every_file_byte_identical(granted, broker_url, researcher, tmp_path):
    out = tmp_path / "model"
    result = run_cli(broker_url, researcher, out)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["state"] == "fetched"
    assert {f["path"]: f["state"] for f in summary["files"]} == dict.fromkeys(FILES, "fetched")
    for path, data in FILES.items():
        assert (out / path).read_bytes() == data
    # Exactly the deposit's files, nothing of the fetch's own (`diff -r` against the original
    # finds no difference): the resume state lives in the config directory, 0600.
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(FILES)
    assert state_path(out).stat().st_mode & 0o777 == 0o600
    assert state_path(out).is_relative_to(Path(os.environ["ESCROW_CONFIG_DIR"]))
    original = out.parent / "original"
    for path, data in FILES.items():
        (original / path).parent.mkdir(parents=True, exist_ok=True)
        (original / path).write_bytes(data)
    assert subprocess.run(["diff", "-r", str(original), str(out)]).returncode == 0


def test_an_older_clients_state_in_out_is_moved_out_and_still_skips(granted, broker_url,
                                                                   researcher, tmp_path, served):
    out = tmp_path / "model"
    assert run_cli(broker_url, researcher, out).exit_code == 0
    state_path(out).rename(out / STATE_FILE)  # where clients before issue 15 kept it
    (out / (STATE_FILE + ".lock")).touch()
    served.reset()
    result = run_cli(broker_url, researcher, out)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {f["state"] for f in summary["files"]} == {"skipped"}
    assert served.total == 0
    assert not (out / STATE_FILE).exists() and not (out / (STATE_FILE + ".lock")).exists()
    assert state_path(out).exists()


def test_a_second_run_skips_verified_files_without_downloading(granted, broker_url, researcher,
                                                              tmp_path, served):
    out = tmp_path / "model"
    assert run_cli(broker_url, researcher, out).exit_code == 0
    served.reset()
    result = run_cli(broker_url, researcher, out)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {f["state"] for f in summary["files"]} == {"skipped"}
    assert served.total == 0


def test_a_file_changed_on_disk_is_not_overwritten(granted, broker_url, researcher, tmp_path):
    out = tmp_path / "model"
    assert run_cli(broker_url, researcher, out).exit_code == 0
    (out / "config.json").write_bytes(b"edited")
    result = run_cli(broker_url, researcher, out)
    assert result.exit_code == 1
    assert "exists and differs" in result.stderr


def test_age_files_decrypt_with_the_age_tool(granted, broker_url, researcher, tmp_path,
                                             require_part):
    require_part(shutil.which("age") is not None, "the Debian age tool")
    out = tmp_path / "enc"
    result = run_cli(broker_url, researcher, out, "--age-files")
    assert result.exit_code == 0, result.output
    for path, data in FILES.items():
        plain = subprocess.run(
            ["age", "-d", "-i", str(researcher.identity_file), str(out / (path + ".age"))],
            capture_output=True, check=True).stdout
        assert plain == data
        assert not (out / path).exists()


def test_age_files_under_a_post_quantum_grant_say_which_age_reads_them(
        escrow, lab, broker_url, researcher, env, tmp_path):
    from dataclasses import replace

    from broker import age
    from broker.cli.fetch import AGE_FILES_POST_QUANTUM

    hybrid = age.generate_hybrid_identity()
    researcher.identity_file.write_text(hybrid.encode() + "\n")
    pq = replace(researcher, identity=hybrid)
    deposit = seal(escrow, lab, {"config.json": b"{}"})
    grant(escrow, pq, deposit["deposit_id"])

    result = run_cli(broker_url, pq, tmp_path / "enc", "--age-files")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["post_quantum"] is True and summary["note"] == AGE_FILES_POST_QUANTUM

    text = CliRunner().invoke(fetch_command, [
        "acme-ai/gpt-small@2024-05", "--broker", broker_url, "--token", pq.token,
        "--identity", str(pq.identity_file), "--out", str(tmp_path / "enc2"), "--age-files",
        "--quiet"])
    assert text.exit_code == 0, text.output
    assert text.output.count("age tool reads these .age files from version 1.3 on") == 1
    assert "escrow fetch` without --age-files decrypts them itself" in text.output
    # and escrow fetch itself decrypts them
    plain = run_cli(broker_url, pq, tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    assert (tmp_path / "plain" / "config.json").read_bytes() == b"{}"
    assert "note" not in json.loads(plain.stdout.strip().splitlines()[-1])


def test_age_files_under_a_classical_grant_carry_no_note(granted, broker_url, researcher,
                                                        tmp_path):
    result = run_cli(broker_url, researcher, tmp_path / "enc", "--age-files")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["post_quantum"] is False and "note" not in summary


def test_a_tampered_payload_stops_with_an_integrity_error_and_no_output(
        escrow, granted, broker_url, researcher, tmp_path):
    deposit, _ = granted
    index = next(f["index"] for f in deposit["files"]
                 if f["path"] == "weights/part-1.safetensors")
    payload = objects(escrow, deposit["deposit_id"]) / "files" / f"{index}.payload"
    data = bytearray(payload.read_bytes())
    data[16 + CHUNK + 100] ^= 1  # inside the second chunk
    payload.write_bytes(bytes(data))
    out = tmp_path / "model"
    with pytest.raises(FileIntegrityError, match=r"weights/part-1\.safetensors"):
        fetcher(broker_url, researcher, out, jobs=1).run()
    assert not (out / "weights/part-1.safetensors").exists()
    assert not (out / "weights/part-1.safetensors.part").exists()


def test_the_cli_exits_4_on_an_integrity_error(escrow, granted, broker_url, researcher, tmp_path):
    deposit, _ = granted
    index = next(f["index"] for f in deposit["files"] if f["path"] == "config.json")
    payload = objects(escrow, deposit["deposit_id"]) / "files" / f"{index}.payload"
    data = bytearray(payload.read_bytes())
    data[-1] ^= 1
    payload.write_bytes(bytes(data))
    result = run_cli(broker_url, researcher, tmp_path / "model")
    assert result.exit_code == 4
    assert "integrity error in config.json" in result.stderr
    assert not (tmp_path / "model" / "config.json").exists()


def test_a_manifest_whose_signature_does_not_verify_is_refused(
        escrow, granted, broker_url, researcher, tmp_path, served):
    deposit, _ = granted
    manifest = objects(escrow, deposit["deposit_id"]) / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b"config.json", b"config.jsoN"))
    with pytest.raises(TamperDetected, match="signature does not verify"):
        fetcher(broker_url, researcher, tmp_path / "model").run()
    assert served.total == 0


def test_a_signed_manifest_with_a_dotdot_path_is_refused(escrow, granted, broker_url, researcher,
                                                         tmp_path, served):
    """A broker that signs a malicious manifest still cannot make the client write outside."""
    import base64

    from broker.auditlog.leaf import canonical_json
    from broker.services import signing

    deposit, _ = granted
    where = objects(escrow, deposit["deposit_id"])
    manifest = json.loads(where.joinpath("manifest.json").read_bytes())
    manifest["files"][0]["path"] = "../../escaped.txt"
    text = canonical_json(manifest)
    with escrow.uow() as uow:
        key_id, signature = signing.sign(uow, escrow.custody, "manifest", text)
    where.joinpath("manifest.json").write_bytes(text)
    where.joinpath("manifest.sig").write_bytes(canonical_json(
        {"algorithm": "ed25519", "key_id": key_id,
         "signature": base64.b64encode(signature).decode()}))
    with pytest.raises(TamperDetected, match="unsafe path"):
        fetcher(broker_url, researcher, tmp_path / "model").run()
    assert not (tmp_path / "escaped.txt").exists()
    assert served.total == 0


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a\\b", "a/../b", "./a", "a//b"])
def test_unsafe_manifest_paths_are_refused(path):
    entry = {"path": path, "size": 1, "sha256": "0" * 64, "header": "files/0.header",
             "payload": "files/0.payload"}
    with pytest.raises(TamperDetected):
        manifest_files({"files": [entry]})


def test_a_path_through_a_symlink_out_of_the_directory_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "weights").symlink_to(tmp_path)
    with pytest.raises(TamperDetected, match="outside --out"):
        output_path(out, "weights/a.bin")


def test_a_wrong_identity_is_refused_before_any_payload_is_downloaded(
        granted, broker_url, researcher, tmp_path, served):
    from broker import age

    other = tmp_path / "other.txt"
    other.write_text(age.generate_x25519_identity().encode() + "\n")
    out = tmp_path / "model"
    with pytest.raises(WrongIdentity, match="this identity does not open the header released"):
        fetcher(broker_url, researcher, out, identity_file=other).run()
    assert served.total == 0


def test_an_interrupted_fetch_resumes_from_the_part_file(granted, broker_url, researcher,
                                                         tmp_path, served):
    """One chunk per block: stop after the first block of the 3-chunk file, then re-run."""
    path = "weights/part-1.safetensors"
    out = tmp_path / "model"

    class Stop(Exception):
        pass

    def stop_after_first_block(name: str, blocks_done: int) -> None:
        if name == path and blocks_done == 1:
            raise Stop

    first = fetcher(broker_url, researcher, out, jobs=1, block_chunks=1)
    first.after_block = stop_after_first_block
    with pytest.raises(Stop):
        first.run()
    part = out / (path + ".part")
    assert part.stat().st_size == CHUNK
    assert not (out / path).exists()

    served.settle()  # the server counts a response when its thread is done with it
    served.reset()
    result = fetcher(broker_url, researcher, out, jobs=1, block_chunks=1).run()
    outcome = {f.path: f for f in result.files}[path]
    assert outcome.state == "resumed"
    assert (out / path).read_bytes() == FILES[path]
    # The second run downloaded this file's nonce and the two missing chunks, nothing more:
    # the other files were finished and verified by the first run.
    assert outcome.downloaded == 16 + 2 * (CHUNK + 16)
    assert {f.state for f in result.files if f.path != path} == {"skipped"}
    assert served.total == 16 + 2 * (CHUNK + 16)


def test_a_resumed_part_that_is_corrupt_on_disk_is_blamed_on_the_local_file_and_refetched(
        granted, broker_url, researcher, tmp_path, capsys):
    path = "weights/part-1.safetensors"
    out = tmp_path / "model"

    class Stop(Exception):
        pass

    def stop(name: str, blocks_done: int) -> None:
        if name == path and blocks_done == 2:
            raise Stop

    first = fetcher(broker_url, researcher, out, jobs=1, block_chunks=1)
    first.after_block = stop
    with pytest.raises(Stop):
        first.run()
    part = out / (path + ".part")
    data = bytearray(part.read_bytes())
    data[10] ^= 1
    part.write_bytes(bytes(data))
    result = fetcher(broker_url, researcher, out, jobs=1).run()
    assert {f.path: f for f in result.files}[path].state == "fetched"  # afresh, in one run
    assert not part.exists()
    assert hashlib.sha256((out / path).read_bytes()).digest() == \
        hashlib.sha256(FILES[path]).digest()
    said = capsys.readouterr().err
    assert "part-1.safetensors.part kept from an earlier run does not match" in said
    assert "had been damaged locally" in said and "the storage and the transfer are fine" in said


def test_no_grant_for_the_model_is_explained(escrow, lab, researcher, broker_url, env, tmp_path):
    seal(escrow, lab, {"a.bin": b"x"})
    result = run_cli(broker_url, researcher, tmp_path / "model")
    assert result.exit_code == 1
    assert "you have no grant for acme-ai/gpt-small@2024-05" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["error"] == "not found"


def test_a_revoked_grant_is_refused_with_the_reason(escrow, granted, broker_url, researcher,
                                                   tmp_path):
    from datetime import UTC, datetime

    from broker.adapters.db.models import Grant

    _, grant_id = granted
    with escrow.uow() as uow:
        uow.session.get(Grant, grant_id).revoked_at = datetime.now(UTC)
        uow.commit()
    result = run_cli(broker_url, researcher, tmp_path / "model")
    assert result.exit_code == 1
    assert f"{grant_id} is revoked" in result.stderr
