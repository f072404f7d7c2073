"""`escrow deposit` against a real broker process: seal, re-run, resume, refuse, survive outages.

Payloads are checked by decrypting the stored `header + payload` with a recipient the "lab"
added (`--recipient`), the way a lab decrypts its own deposit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

from live import require_part

from broker import age
from broker.client.pins import check_keys
from broker.domain.parts import payload_size, plan_parts

from .conftest import Lab, Ran, have_age_tool, kill9

MIB = 1024 * 1024
BIG = 66 * MIB  # two parts of the broker's 64 MiB: one full, one short


def last_json(result: Ran) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * MIB):
            digest.update(block)
    return digest.hexdigest()


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        left = size
        while left:
            n = min(left, 8 * MIB)
            handle.write(os.urandom(n))
            left -= n
    return path


def lab_identity() -> tuple[age.Identity, str]:
    identity = age.generate_hybrid_identity()
    return identity, str(identity.to_recipient())


def decrypt_stored(lab: Lab, deposit_id: str, index: int, identity: age.Identity) -> bytes:
    files = lab.objects(deposit_id) / "files"
    stored = (files / f"{index}.header").read_bytes() + (files / f"{index}.payload").read_bytes()
    out = io.BytesIO()
    age.decrypt(io.BytesIO(stored), out, [identity])
    return out.getvalue()


def api(lab: Lab, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        lab.broker.url + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {lab.broker.token}",
                 "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def args(directory: Path, version: str, *more: str) -> list[str]:
    return [str(directory), "--model", "acme-ai/gpt-small", "--version", version, "--json", *more]


# --- the happy path ----------------------------------------------------------------------------


def test_a_deposit_seals_and_its_manifest_lists_path_size_and_sha256(lab: Lab, tmp_path: Path
                                                                      ) -> None:
    model = tmp_path / "model"
    random_file(model / "model-00001.safetensors", 3 * MIB + 5)
    (model / "tokenizer").mkdir()
    (model / "tokenizer" / "config.json").write_text('{"vocab": 5}')
    (model / "empty.txt").write_bytes(b"")
    random_file(tmp_path / "blobs" / "abc", 1000)
    (model / "linked.bin").symlink_to(tmp_path / "blobs" / "abc")
    identity, recipient = lab_identity()

    result = lab.deposit(*args(model, "seal-1", "--recipient", recipient))

    assert result.returncode == 0, result.stderr
    deposit = last_json(result)
    assert deposit["state"] == "sealed" and not deposit["classical"]
    expected = {
        "empty.txt": (0, hashlib.sha256(b"").hexdigest()),
        "linked.bin": (1000, sha256(tmp_path / "blobs" / "abc")),
        "model-00001.safetensors": (3 * MIB + 5, sha256(model / "model-00001.safetensors")),
        "tokenizer/config.json": (12, hashlib.sha256(b'{"vocab": 5}').hexdigest()),
    }
    assert {f["path"]: (f["size"], f["sha256"]) for f in deposit["files"]} == expected
    manifest = json.loads((lab.objects(deposit["deposit_id"]) / "manifest.json").read_bytes())
    assert {f["path"]: (f["size"], f["sha256"]) for f in manifest["files"]} == expected
    for file in deposit["files"]:
        plain = decrypt_stored(lab, deposit["deposit_id"], file["index"], identity)
        assert hashlib.sha256(plain).hexdigest() == file["sha256"]  # the empty file too
    assert lab.journal_files() == []  # deleted at seal: no file keys linger
    assert "esk_" not in result.stderr + result.stdout


def test_running_again_after_seal_prints_the_sealed_deposit_and_changed_content_is_refused(
    lab: Lab, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    random_file(model / "w.bin", 100_000)
    first = lab.deposit(*args(model, "rerun-1"))
    assert first.returncode == 0, first.stderr

    again = lab.deposit(*args(model, "rerun-1"))
    assert again.returncode == 0, again.stderr
    assert last_json(again)["deposit_id"] == last_json(first)["deposit_id"]
    assert last_json(again)["state"] == "sealed"
    assert last_json(again)["upload"]["bytes_sent"] == 0

    data = bytearray((model / "w.bin").read_bytes())
    data[500] ^= 0xFF  # same size, different content
    (model / "w.bin").write_bytes(data)
    changed = lab.deposit(*args(model, "rerun-1"))
    assert changed.returncode == 1
    assert "is sealed with different content" in changed.stderr
    assert "new --version" in changed.stderr
    assert last_json(changed)["error"] == "conflict"
    assert last_json(changed)["deposit_id"] == last_json(first)["deposit_id"]

    (model / "extra.bin").write_bytes(b"more")  # different files: the broker says 409
    grown = lab.deposit(*args(model, "rerun-1"))
    assert grown.returncode == 1 and "sealed with different files" in grown.stderr


# --- resume after kill -9 ----------------------------------------------------------------------


def kill_after_first_part(lab: Lab, model: Path, version: str, *more: str,
                          drop_in_flight: bool = False) -> tuple[str, dict]:
    """Start a deposit, slow it to 2 MB/s after part 1, and kill -9 it once the broker holds
    part 1 (parts go one at a time with --jobs 1). `drop_in_flight`: also cut the connections
    at once, so that what the killed client had already written to its socket (part 2, in
    flight) never completes at the store."""
    lab.proxy.rate_bps, lab.proxy.slow_after = 2e6, plan_parts(BIG)[0].cipher_size + 256 * 1024
    process = lab.start_deposit(*args(model, version, "--jobs", "1", *more))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            journals = lab.journal_files()
            if journals:
                deposit_id = journals[0].stem
                base = f"/api/v1/deposits/{deposit_id}/files/0/upload"
                parts = api(lab, "POST", base, {"restart": False})["parts"]
                if parts and (not drop_in_flight or _journaled(journals[0], "2")):
                    kill9(process)
                    if drop_in_flight:
                        lab.proxy.go_down()
                        lab.proxy.reset()
                    assert len(parts) == 1, "the deposit finished before it was killed"
                    return deposit_id, json.loads(journals[0].read_text())
            assert process.poll() is None, process.communicate()
            time.sleep(0.02)
        raise AssertionError("the broker never received part 1")
    finally:
        if process.poll() is None:
            kill9(process)
        lab.proxy.rate_bps = lab.proxy.slow_after = None
        lab.proxy.wait_idle()


def _journaled(journal: Path, part: str) -> bool:
    """Whether the client journaled `part`'s fingerprint (it does so before the part's first
    byte goes out): on a loaded machine it may still be reading part 1's answer."""
    try:
        entry = json.loads(journal.read_text())["files"].get("0", {})
    except (OSError, ValueError):
        return False  # being rewritten: look again
    return part in entry.get("fingerprints", {})


def test_kill_9_mid_upload_then_rerun_sends_only_the_missing_parts(lab: Lab, tmp_path: Path
                                                                   ) -> None:
    model = tmp_path / "model"
    random_file(model / "big.bin", BIG)
    identity, recipient = lab_identity()
    deposit_id, journal = kill_after_first_part(lab, model, "kill-1", "--recipient", recipient)
    assert journal["files"]["0"]["fingerprints"], "part 1's fingerprint was journaled"

    lab.proxy.bytes_up = 0
    result = lab.deposit(*args(model, "kill-1", "--recipient", recipient))

    assert result.returncode == 0, result.stderr
    deposit = last_json(result)
    assert deposit["deposit_id"] == deposit_id and deposit["state"] == "sealed"
    parts = plan_parts(BIG)
    kept = deposit["upload"]["parts_kept"]
    assert kept >= 1 and deposit["upload"]["files_restarted"] == []
    resent = sum(p.cipher_size for p in parts[kept:])
    # What crossed the wire (counted by the proxy, not by the client): only the missing parts,
    # plus a little HTTP and JSON.
    assert resent <= lab.proxy.bytes_up < resent + MIB
    assert lab.proxy.bytes_up < payload_size(BIG) - parts[0].cipher_size + MIB
    plain = decrypt_stored(lab, deposit_id, 0, identity)
    assert hashlib.sha256(plain).hexdigest() == sha256(model / "big.bin")


def test_a_file_changed_between_runs_starts_over_with_a_new_key(lab: Lab, tmp_path: Path
                                                                ) -> None:
    model = tmp_path / "model"
    random_file(model / "big.bin", BIG)
    identity, recipient = lab_identity()
    deposit_id, journal = kill_after_first_part(lab, model, "change-1", "--recipient", recipient)
    old_key = bytes.fromhex(journal["files"]["0"]["file_key"])

    with open(model / "big.bin", "r+b") as handle:  # change part 1, keep the size
        handle.seek(1000)
        handle.write(b"changed!")

    result = lab.deposit(*args(model, "change-1", "--recipient", recipient))

    assert result.returncode == 0, result.stderr
    deposit = last_json(result)
    assert deposit["upload"]["files_restarted"] == ["big.bin"]
    assert deposit["upload"]["parts_kept"] == 0
    assert "starting it over with a new key" in result.stderr
    header = (lab.objects(deposit_id) / "files" / "0.header").read_bytes()
    assert age.unwrap_file_key(header, [identity]) != old_key
    assert deposit["files"][0]["sha256"] == sha256(model / "big.bin")


def test_a_part_changed_without_a_new_mtime_is_caught_by_its_fingerprint(lab: Lab,
                                                                         tmp_path: Path) -> None:
    model = tmp_path / "model"
    path = random_file(model / "big.bin", BIG)
    _deposit_id, _journal = kill_after_first_part(lab, model, "sneaky-1")
    before = os.stat(path)
    with open(path, "r+b") as handle:
        handle.seek(7)
        handle.write(b"X")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # hide the change from mtime

    result = lab.deposit(*args(model, "sneaky-1"))

    assert result.returncode == 0, result.stderr
    assert "part(s) [1] changed since they were sent" in result.stderr
    assert last_json(result)["upload"]["files_restarted"] == ["big.bin"]
    assert last_json(result)["files"][0]["sha256"] == sha256(path)


def test_an_in_place_edit_of_the_part_in_flight_at_kill_9_restarts_the_file_with_a_new_key(
        lab: Lab, tmp_path: Path) -> None:
    """Issue 14 item 7: kill -9 while part 2 is on the wire, edit part 2 keeping size, mtime
    and inode, run again. Part 2's fingerprint was journaled before its first byte went out,
    so the rerun sees the edit and encrypts the file under a new key and nonce: nothing is
    encrypted twice under one key and counter with different plaintext."""
    model = tmp_path / "model"
    path = random_file(model / "big.bin", BIG)
    identity, recipient = lab_identity()
    deposit_id, journal = kill_after_first_part(lab, model, "inflight-1", "--recipient",
                                                recipient, drop_in_flight=True)
    entry = journal["files"]["0"]
    assert set(entry["fingerprints"]) == {"1", "2"}, "part 2 (in flight) was journaled first"
    old_key, old_nonce = bytes.fromhex(entry["file_key"]), bytes.fromhex(entry["nonce"])
    stored = api(lab, "POST", f"/api/v1/deposits/{deposit_id}/files/0/upload",
                 {"restart": False})["parts"]
    assert [p["number"] for p in stored] == [1], "part 2 was in flight, not stored"

    before = os.stat(path)
    offset = plan_parts(BIG)[1].plain_offset + 100  # in part 2's first chunk, already sent
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"edited in place")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino)

    result = lab.deposit(*args(model, "inflight-1", "--recipient", recipient))

    assert result.returncode == 0, result.stderr
    deposit = last_json(result)
    assert deposit["state"] == "sealed"
    assert "part(s) [2] changed since they were sent" in result.stderr
    assert deposit["upload"]["files_restarted"] == ["big.bin"]
    assert deposit["upload"]["parts_kept"] == 0
    files = lab.objects(deposit_id) / "files"
    new_key = age.unwrap_file_key((files / "0.header").read_bytes(), [identity])
    with open(files / "0.payload", "rb") as payload:
        new_nonce = payload.read(len(old_nonce))
    assert new_key != old_key and new_nonce != old_nonce
    assert hashlib.sha256(decrypt_stored(lab, deposit_id, 0, identity)).hexdigest() == (
        sha256(path))


def test_an_upload_the_local_store_loses_mid_part_is_started_over_in_the_same_run(
        lab: Lab, tmp_path: Path) -> None:
    """The store forgets the upload while part 1 is on the wire (the local store's equivalent of
    an S3 lifecycle abort: its staging directory is removed). The part upload is refused with
    404, and the same run starts the file over under a new key and seals it."""
    model = tmp_path / "model"
    random_file(model / "big.bin", BIG)
    identity, recipient = lab_identity()
    lab.proxy.rate_bps, lab.proxy.slow_after = 2e6, 256 * 1024
    process = lab.start_deposit(*args(model, "vanish-1", "--jobs", "1", "--recipient",
                                      recipient))
    try:
        deadline = time.monotonic() + 60
        entry: dict = {}
        while not entry.get("fingerprints") and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            journals = lab.journal_files()
            entry = json.loads(journals[0].read_text())["files"].get("0", {}) if journals else {}
            time.sleep(0.02)
        deposit_id = lab.journal_files()[0].stem
        old_key = bytes.fromhex(entry["file_key"])
        staged = [d for d in (lab.broker.data_dir / "staging").iterdir()
                  if deposit_id in (d / "upload.json").read_text()]
        assert len(staged) == 1
        shutil.rmtree(staged[0])
        lab.proxy.rate_bps = None
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            kill9(process)

    assert process.returncode == 0, stderr
    assert "no longer knows its upload" in stderr
    deposit = json.loads(stdout.strip().splitlines()[-1])
    assert deposit["state"] == "sealed"
    assert deposit["upload"]["files_restarted"] == ["big.bin"]
    header = (lab.objects(deposit_id) / "files" / "0.header").read_bytes()
    assert age.unwrap_file_key(header, [identity]) != old_key
    assert hashlib.sha256(decrypt_stored(lab, deposit_id, 0, identity)).hexdigest() == (
        sha256(model / "big.bin"))


# --- outages and refusals ----------------------------------------------------------------------


def test_the_broker_going_away_mid_upload_is_retried_then_explained(lab: Lab, tmp_path: Path
                                                                    ) -> None:
    model = tmp_path / "model"
    random_file(model / "w.bin", 12 * MIB)
    lab.proxy.cut_after = 6 * MIB

    failed = lab.deposit(*args(model, "outage-1"))

    assert failed.returncode == 1
    assert "went away" in failed.stderr and "gave up after 3 attempts" in failed.stderr
    assert "retrying in" in failed.stderr
    assert "run the same command again" in failed.stderr
    lab.proxy.reset()
    resumed = lab.deposit(*args(model, "outage-1"))
    assert resumed.returncode == 0, resumed.stderr
    assert last_json(resumed)["state"] == "sealed"


def test_a_wrong_token_gets_a_401_that_reveals_nothing(lab: Lab, tmp_path: Path) -> None:
    random_file(tmp_path / "model" / "w.bin", 10)
    result = lab.deposit(*args(tmp_path / "model", "token-1"),
                         ESCROW_TOKEN="esk_nosuchid_nosuchsecret")
    assert result.returncode == 1
    assert "nosuchsecret" not in result.stderr + result.stdout
    assert last_json(result)["error"] == "unauthorized"
    wrong = last_json(result)["detail"]

    token_id = lab.broker.token.split("_")[1]
    created = lab.broker.escrow("admin", "token", "create", "--org", "acme-ai", "--role",
                                "depositor", "--json")
    expiring = lab.broker.last_json(created)["token"]
    with sqlite3.connect(lab.broker.data_dir / "escrow.db") as db:
        db.execute("UPDATE service_tokens SET expires_at = '2000-01-01 00:00:00.000000' "
                   "WHERE id = ?", (expiring.split("_")[1],))
    assert expiring.split("_")[1] != token_id
    expired = lab.deposit(*args(tmp_path / "model", "token-1"), ESCROW_TOKEN=expiring)
    assert expired.returncode == 1
    assert last_json(expired)["detail"] == wrong  # expired looks exactly like wrong


def test_bad_entries_are_refused_by_name_before_anything_is_sent(lab: Lab, tmp_path: Path
                                                                 ) -> None:
    model = tmp_path / "model"
    random_file(model / "ok.bin", 10)
    os.mkfifo(model / "fifo")
    (model / "dir-link").symlink_to(tmp_path)
    (model / "loop").symlink_to(model / "loop")
    (model / "dangling").symlink_to(tmp_path / "gone")
    (model / "back\\slash").write_bytes(b"")

    result = lab.deposit(*args(model, "bad-1"))

    assert result.returncode == 1
    assert "5 path(s) refused" in result.stderr
    for expected in ("fifo: is a FIFO", "dir-link: is a symlink to a directory",
                     "loop: is a symlink loop", "dangling: is a dangling symlink",
                     "back\\slash: name contains a backslash"):
        assert expected in result.stderr
    assert lab.proxy.bytes_up < 2000  # only the pinning GET of /api/v1/keys
    assert last_json(result)["error"] == "invalid input"


def test_a_changed_pinned_key_stops_the_command_loudly(lab: Lab, tmp_path: Path) -> None:
    random_file(tmp_path / "model" / "w.bin", 10)
    keys = json.loads(urllib.request.urlopen(lab.proxy.url + "/api/v1/keys").read())
    check_keys(lab.proxy.url, keys, lab.config_dir)  # what the first contact pinned
    pins_file = lab.config_dir / "pins.json"
    pins = json.loads(pins_file.read_text())
    for keys in pins.values():
        keys["manifest"]["key_id"] = "0123456789abcdef"
        keys["manifest"]["public_key"] = "bm90IHRoZSBrZXk="
    pins_file.write_text(json.dumps(pins))

    result = lab.deposit(*args(tmp_path / "model", "pin-1"))

    assert result.returncode == 4
    assert "signing key" in result.stderr and "0123456789abcdef" in result.stderr
    assert "escrow pins forget" in result.stderr


def test_a_classical_lab_recipient_on_a_post_quantum_deposit_warns(lab: Lab, tmp_path: Path
                                                                   ) -> None:
    random_file(tmp_path / "model" / "w.bin", 10)
    classical = str(age.generate_x25519_identity().to_recipient())
    result = lab.deposit(*args(tmp_path / "model", "classical-1", "--recipient", classical))
    assert result.returncode == 0, result.stderr
    assert "makes the deposit classical" in result.stderr
    assert last_json(result)["classical"] is True


# --- files encrypted with the plain age tool ---------------------------------------------------


def test_files_encrypted_with_plain_age_are_registered_and_sealed(lab: Lab, tmp_path: Path
                                                                   ) -> None:
    require_part(have_age_tool(), "the Debian age tool")
    opened = lab.deposit("--model", "acme-ai/gpt-small", "--version", "plain-age-1",
                         "--classical", "--recipient-only", "--json")
    assert opened.returncode == 0, opened.stderr
    recipient = last_json(opened)["recipient"]
    assert recipient.startswith("age1") and not recipient.startswith("age1pq")

    model, encrypted = tmp_path / "model", tmp_path / "enc"
    random_file(model / "w.bin", 200_000)
    (model / "empty").write_bytes(b"")
    (encrypted / "sub").mkdir(parents=True)
    sums = []
    for name in ("w.bin", "empty"):
        target = encrypted / ("sub/" + name if name == "empty" else name)
        subprocess.run(["age", "-r", recipient, "-o", f"{target}.age", model / name], check=True)
        sums.append(f"{sha256(model / name)}  ./{'sub/' if name == 'empty' else ''}{name}")
    (tmp_path / "SUMS").write_text("\n".join(sums) + "\n")

    result = lab.deposit(*args(encrypted, "plain-age-1", "--classical", "--pre-encrypted",
                               "--sha256sums", str(tmp_path / "SUMS")))

    assert result.returncode == 0, result.stderr
    deposit = last_json(result)
    assert deposit["state"] == "sealed"
    assert {f["path"]: f["size"] for f in deposit["files"]} == {"w.bin": 200_000, "sub/empty": 0}


def test_no_wait_returns_once_submitted_and_a_rerun_waits_for_the_seal(lab: Lab, tmp_path: Path
                                                                        ) -> None:
    random_file(tmp_path / "model" / "w.bin", 1000)
    submitted = lab.deposit(*args(tmp_path / "model", "nowait-1", "--no-wait"))
    assert submitted.returncode == 0, submitted.stderr
    assert last_json(submitted)["state"] in ("verifying", "sealed")
    sealed = lab.deposit(*args(tmp_path / "model", "nowait-1"))
    assert sealed.returncode == 0, sealed.stderr
    assert last_json(sealed)["state"] == "sealed"
    assert last_json(sealed)["upload"]["bytes_sent"] == 0
    assert lab.journal_files() == []


def test_pins_forget_lets_the_next_command_pin_the_new_keys(lab: Lab) -> None:
    from click.testing import CliRunner

    from broker.cli.pins import pins

    keys = json.loads(urllib.request.urlopen(lab.proxy.url + "/api/v1/keys").read())
    check_keys(lab.proxy.url, keys, lab.config_dir)
    runner = CliRunner(env={"ESCROW_CONFIG_DIR": str(lab.config_dir)})
    listed = runner.invoke(pins, ["list", "--json"])
    assert keys["manifest"]["key_id"] in listed.stdout
    forgot = runner.invoke(pins, ["forget", lab.proxy.url])
    assert forgot.exit_code == 0 and "forgot the keys" in forgot.stdout
    assert json.loads(runner.invoke(pins, ["list", "--json"]).stdout) == {"pins": {}}
