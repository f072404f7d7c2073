"""`escrow admin key rotate` as a process: killed with SIGKILL half-way and run again, it finishes
the same rotation with every identity readable; with the wrong key it changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from live import ESCROW_BIN

from broker.adapters.custody.local import LocalCustody, key_id_of, read_key_file
from broker.cli.admin_key import TEST_ONLY_PAUSE_ROTATION_AFTER
from broker.config import Settings

from .support import bucket_keys, fresh_escrow, keys_in_use, plaintexts


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESCROW_", "AWS_"))}
    return {
        **env,
        "ESCROW_DATA_DIR": str(settings.data_dir),
        "ESCROW_DATABASE_URL": settings.database_url,
        "AWS_CONFIG_FILE": os.devnull,  # never the developer's own AWS setup
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        **extra,
    }


def rotate_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ESCROW_BIN, "admin", "key", "rotate", "--settle-seconds", "0", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def local_key(settings: Settings) -> str:
    return f"local:{key_id_of(read_key_file(settings.key_file))}"


def wait_for(stream, text: str) -> list[str]:
    seen = []
    for line in iter(stream.readline, ""):
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"the process ended without printing {text!r}:\n{''.join(seen)}")


def test_a_rotation_killed_half_way_finishes_when_run_again(escrow, deposits):
    before, old_key = plaintexts(escrow), local_key(escrow.settings)
    env = cli_env(escrow.settings, **{TEST_ONLY_PAUSE_ROTATION_AFTER: "3"})
    process = subprocess.Popen(
        [ESCROW_BIN, "admin", "key", "rotate", "--settle-seconds", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(process.stderr, "paused")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    new_key = local_key(escrow.settings)
    half = list(keys_in_use(escrow).values())
    assert new_key != old_key and half.count(new_key) == 3 and set(half) == {old_key, new_key}
    with fresh_escrow(escrow) as broker:
        assert plaintexts(broker) == before  # readable mid-rotation, by a broker started now

    result = rotate_cli(cli_env(escrow.settings), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["resumed"] and report["key"] == new_key and report["rewrapped"] == 3
    assert set(keys_in_use(escrow).values()) == {new_key}
    assert bucket_keys(escrow, deposits) == {new_key}
    with fresh_escrow(escrow) as broker:
        assert plaintexts(broker) == before


def test_the_report_says_what_may_be_destroyed_and_to_split_again(escrow, deposits):
    old_id = key_id_of(read_key_file(escrow.settings.key_file))
    result = rotate_cli(cli_env(escrow.settings))
    assert result.returncode == 0, result.stderr
    assert "finished: every wrapped secret is under local:" in result.stdout
    assert "no configuration change is needed" in result.stdout
    assert f"master.key.{old_id} (retired local key {old_id})" in result.stdout
    assert "escrow admin key split" in result.stdout
    assert "re-wrapped 6/6" in result.stderr


def test_the_wrong_key_file_changes_nothing_and_says_why(escrow, deposits, tmp_path: Path):
    LocalCustody.create_key_file(tmp_path / "wrong" / "master.key")
    before = keys_in_use(escrow)
    result = rotate_cli(
        cli_env(escrow.settings, ESCROW_KEY_FILE=str(tmp_path / "wrong" / "master.key"))
    )
    assert result.returncode == 1
    assert "error: key rotation stopped before changing anything" in result.stderr
    assert "blob needs local master key" in result.stderr and "hint:" in result.stderr
    assert keys_in_use(escrow) == before
    assert sorted(p.name for p in (tmp_path / "wrong").iterdir()) == ["master.key"]


@pytest.mark.s3
def test_moving_to_kms_from_the_command_line(escrow, deposits, moto_endpoint):
    key_id = moto_endpoint.client("kms").create_key()["KeyMetadata"]["KeyId"]
    aws = {
        "AWS_ENDPOINT_URL_KMS": moto_endpoint.url,
        "AWS_ACCESS_KEY_ID": moto_endpoint.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto_endpoint.secret_access_key,
        "AWS_DEFAULT_REGION": moto_endpoint.region,
    }
    first = rotate_cli(cli_env(escrow.settings, **aws), "--to", "aws-kms", "--kms-key-id", key_id)
    assert first.returncode == 0, first.stderr
    arn = next(w for w in first.stdout.split() if w.startswith("ESCROW_KMS_KEY_ID="))
    assert "set ESCROW_KEY_CUSTODY=aws-kms " + arn in first.stdout
    assert "run `escrow admin key rotate` again" in first.stdout

    configured = cli_env(
        escrow.settings, **aws, ESCROW_KEY_CUSTODY="aws-kms", ESCROW_KMS_KEY_ID=arn.split("=")[1]
    )
    second = rotate_cli(configured)
    assert second.returncode == 0, second.stderr
    assert "resumed and finished" in second.stdout and "(0 re-wrapped" in second.stdout
    assert f"{escrow.settings.key_file} (the local master key)" in second.stdout
    assert set(keys_in_use(escrow).values()) == {"aws-kms:" + arn.split("=")[1]}
