"""The keyring under a rotation: a broker wraps with the key file's key (re-read when a rotation
replaces it) and opens each blob with the key it names, retired or of another backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.adapters.custody import describe_blob, open_custody
from broker.adapters.custody.aws_kms import AwsKmsCustody
from broker.adapters.custody.local import (
    LocalCustody,
    generate_key,
    key_id_of,
    read_key_file,
    replace_key_file,
    retired_key_path,
    write_key_file,
)
from broker.errors import CustodyError

SECRET = b"AGE-SECRET-KEY-1 not a real one"
CONTEXT = {"purpose": "deposit-identity", "deposit": "d1"}


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    LocalCustody.create_key_file(tmp_path / "keys" / "master.key")
    return tmp_path / "keys" / "master.key"


def keep_and_replace(key_file: Path) -> tuple[str, str]:
    """What a rotation does to the files: keep the old key beside, install a new one."""
    old_key = read_key_file(key_file)
    write_key_file(retired_key_path(key_file, key_id_of(old_key)), old_key)
    new_key = generate_key()
    replace_key_file(key_file, new_key)
    return key_id_of(old_key), key_id_of(new_key)


def test_a_running_custody_switches_to_the_new_key_and_still_reads_the_old(key_file: Path):
    running = LocalCustody(key_file)
    old_blob = running.wrap(SECRET, CONTEXT)
    old_id, new_id = keep_and_replace(key_file)

    assert running.key_id == new_id
    assert describe_blob(running.wrap(SECRET, CONTEXT)).key_id == new_id
    assert running.unwrap(old_blob, CONTEXT) == SECRET
    assert LocalCustody(key_file).unwrap(old_blob, CONTEXT) == SECRET  # a broker started now
    assert old_id != new_id


def test_without_the_retired_key_file_the_blob_names_what_is_missing(key_file: Path):
    old_blob = LocalCustody(key_file).wrap(SECRET, CONTEXT)
    old_id, _ = keep_and_replace(key_file)
    retired_key_path(key_file, old_id).unlink()
    with pytest.raises(CustodyError, match=f"needs local master key {old_id}") as raised:
        LocalCustody(key_file).unwrap(old_blob, CONTEXT)
    assert f"master.key.{old_id}" in raised.value.message
    assert "escrow admin key join" in raised.value.hint


def test_a_retired_key_file_under_the_wrong_name_is_refused(key_file: Path, tmp_path: Path):
    old_blob = LocalCustody(key_file).wrap(SECRET, CONTEXT)
    old_id, _ = keep_and_replace(key_file)
    retired = retired_key_path(key_file, old_id)
    retired.unlink()
    write_key_file(retired, generate_key())
    with pytest.raises(CustodyError, match=f"holds key [0-9a-f]{{16}}, not {old_id}"):
        LocalCustody(key_file).unwrap(old_blob, CONTEXT)


@pytest.mark.parametrize("key_id", ["../../etc/passwd", "0123456789ABCDEF", "01234567", "x" * 99])
def test_a_blob_key_id_never_names_a_path(key_file: Path, key_id: str):
    document = json.loads(LocalCustody(key_file).wrap(SECRET, CONTEXT))
    document["key_id"] = key_id
    with pytest.raises(CustodyError, match="is not a local key id"):
        LocalCustody(key_file).unwrap(json.dumps(document).encode(), CONTEXT)


def test_the_keyring_refuses_a_backend_it_does_not_know(key_file: Path, tmp_path: Path):
    keyring = open_custody("local", data_dir=tmp_path, key_file=key_file)
    blob = json.dumps({"v": 1, "backend": "vault", "key_id": "k"}).encode()
    with pytest.raises(CustodyError, match="unknown key custody 'vault'"):
        keyring.unwrap(blob, CONTEXT)


# --- across backends (moto's KMS) ------------------------------------------------------------


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch) -> None:
    """open_custody builds its KMS clients from the environment, as in production."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_endpoint.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_endpoint.secret_access_key)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.mark.s3
def test_a_local_keyring_reads_kms_blobs_and_a_kms_keyring_reads_local_ones(
    key_file: Path,
    tmp_path: Path,
    moto_endpoint,
    aws_env,
):
    key_id = moto_endpoint.client("kms").create_key()["KeyMetadata"]["KeyId"]
    kms = AwsKmsCustody(key_id, endpoint_url=moto_endpoint.url, session=moto_endpoint.session())
    local = open_custody(
        "local", data_dir=tmp_path, key_file=key_file, endpoint_url=moto_endpoint.url
    )
    in_kms, in_file = kms.wrap(SECRET, CONTEXT), local.wrap(SECRET, CONTEXT)
    assert local.unwrap(in_kms, CONTEXT) == SECRET

    configured_kms = open_custody(
        "aws-kms",
        data_dir=tmp_path,
        key_file=key_file,
        kms_key_id=key_id,
        endpoint_url=moto_endpoint.url,
    )
    assert configured_kms.unwrap(in_file, CONTEXT) == SECRET
    assert configured_kms.unwrap(in_kms, CONTEXT) == SECRET

    key_file.unlink()
    fresh = open_custody(
        "aws-kms",
        data_dir=tmp_path,
        key_file=key_file,
        kms_key_id=key_id,
        endpoint_url=moto_endpoint.url,
    )
    with pytest.raises(CustodyError, match=f"there is no key file {key_file}"):
        fresh.unwrap(in_file, CONTEXT)
