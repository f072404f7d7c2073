"""Key custody: local key files and AWS KMS (moto's KMS over HTTP) wrap and unwrap secrets
bound to a context, in versioned blobs that name their backend and key."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from broker.adapters.custody import describe_blob, open_custody
from broker.adapters.custody.aws_kms import AwsKmsCustody
from broker.adapters.custody.local import KEY_FILE_HEADER, LocalCustody, key_id_of
from broker.errors import ConfigError, CustodyError

SECRET = b"AGE-SECRET-KEY-PQ-1 not a real one"
CONTEXT = {"purpose": "deposit-identity", "deposit": "d1"}
A_32_BYTE_KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "master.key"


@pytest.fixture
def custody(key_file: Path) -> LocalCustody:
    return LocalCustody.create_key_file(key_file)


# -- local -------------------------------------------------------------------------------------


def test_local_round_trip(custody: LocalCustody) -> None:
    blob = custody.wrap(SECRET, CONTEXT)
    assert custody.unwrap(blob, dict(CONTEXT)) == SECRET
    assert SECRET not in blob


def test_a_local_blob_is_a_versioned_document_naming_backend_and_key(
    custody: LocalCustody,
) -> None:
    blob = custody.wrap(SECRET, CONTEXT)
    document = json.loads(blob)
    assert set(document) == {"v", "backend", "key_id", "nonce", "ct"}
    assert (document["v"], document["backend"], document["key_id"]) == (1, "local", custody.key_id)
    assert len(base64.b64decode(document["nonce"])) == 12
    assert len(base64.b64decode(document["ct"])) == len(SECRET) + 16

    info = describe_blob(blob)
    assert (info.version, info.backend, info.key_id) == (1, "local", custody.key_id)


def test_wrapping_twice_gives_different_blobs(custody: LocalCustody) -> None:
    assert custody.wrap(SECRET, CONTEXT) != custody.wrap(SECRET, CONTEXT)


@pytest.mark.parametrize(
    "context",
    [
        {"purpose": "deposit-identity", "deposit": "d2"},
        {"purpose": "deposit-identity"},
        {**CONTEXT, "extra": "x"},
    ],
)
def test_a_wrong_context_is_refused(custody: LocalCustody, context: dict[str, str]) -> None:
    blob = custody.wrap(SECRET, CONTEXT)
    with pytest.raises(CustodyError, match=f"blob for local key {custody.key_id}") as raised:
        custody.unwrap(blob, context)
    assert "wrong context" in raised.value.message
    assert SECRET.decode() not in raised.value.diagnostics()


def test_an_altered_blob_is_refused(custody: LocalCustody) -> None:
    document = json.loads(custody.wrap(SECRET, CONTEXT))
    ct = bytearray(base64.b64decode(document["ct"]))
    ct[0] ^= 1
    document["ct"] = base64.b64encode(bytes(ct)).decode()
    with pytest.raises(CustodyError, match="altered"):
        custody.unwrap(json.dumps(document).encode(), CONTEXT)


def test_a_blob_for_another_key_names_the_key_it_needs(
    custody: LocalCustody, tmp_path: Path
) -> None:
    other = LocalCustody.create_key_file(tmp_path / "other.key")
    blob = other.wrap(SECRET, CONTEXT)
    with pytest.raises(CustodyError, match=f"needs local master key {other.key_id}") as raised:
        custody.unwrap(blob, CONTEXT)
    assert custody.key_id in raised.value.message


@pytest.mark.parametrize(
    "blob", [b"", b"not json", b"[]", b'{"v": 2, "backend": "local", "key_id": "x"}', b"{}"]
)
def test_a_blob_that_is_not_an_envelope_is_refused(custody: LocalCustody, blob: bytes) -> None:
    with pytest.raises(CustodyError):
        custody.unwrap(blob, CONTEXT)


@pytest.mark.parametrize("context", [{}, {"deposit": 1}, None])
def test_a_context_must_name_what_it_protects(custody: LocalCustody, context) -> None:
    with pytest.raises(CustodyError, match="context"):
        custody.wrap(SECRET, context)


def test_the_key_file_is_private_and_recognisable(custody: LocalCustody, key_file: Path) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    lines = key_file.read_text().splitlines()
    assert lines[0] == KEY_FILE_HEADER
    assert lines[1] == f"key-id: {custody.key_id}"
    key = base64.b64decode(lines[2].removeprefix("key: "))
    assert len(key) == 32 and key_id_of(key) == custody.key_id
    assert len(custody.key_id) == 16


def test_the_key_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        LocalCustody.create_key_file(tmp_path / "master.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600


def test_create_refuses_to_overwrite_a_key_file(custody: LocalCustody, key_file: Path) -> None:
    before = key_file.read_bytes()
    with pytest.raises(CustodyError, match="already exists; refusing to overwrite"):
        LocalCustody.create_key_file(key_file)
    assert key_file.read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o620])
def test_a_key_file_open_to_group_or_others_is_refused(
    custody: LocalCustody, key_file: Path, mode: int
) -> None:
    key_file.chmod(mode)
    with pytest.raises(CustodyError, match="group or others") as raised:
        LocalCustody(key_file)
    assert raised.value.hint == f"run: chmod 600 {key_file}"
    with pytest.raises(CustodyError, match="group or others"):
        custody.check()


def test_a_0400_key_file_is_accepted(custody: LocalCustody, key_file: Path) -> None:
    key_file.chmod(0o400)
    assert LocalCustody(key_file).key_id == custody.key_id


def test_a_missing_key_file_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(CustodyError, match="does not exist") as raised:
        LocalCustody(tmp_path / "nope.key")
    assert "escrow init" in raised.value.hint


@pytest.mark.parametrize(
    "text",
    [
        "",
        "some other file\n",
        f"{KEY_FILE_HEADER}\nkey: {base64.b64encode(b'short').decode()}\nkey-id: x\n",
        f"{KEY_FILE_HEADER}\nkey-id: 0000000000000000\nkey: {A_32_BYTE_KEY}\n",
        f"{KEY_FILE_HEADER}\nkey-id: 0\nkey: not base64!\n",
    ],
)
def test_a_malformed_key_file_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(CustodyError, match="master key"):
        LocalCustody(path)


def test_check_describes_the_key(custody: LocalCustody, key_file: Path) -> None:
    assert custody.check() == f"local key file {key_file} (key {custody.key_id})"


# -- open_custody ------------------------------------------------------------------------------


def test_open_custody_defaults_to_the_key_file_in_the_data_dir(tmp_path: Path) -> None:
    made = LocalCustody.create_key_file(tmp_path / "keys" / "master.key")
    opened = open_custody("local", data_dir=tmp_path)
    assert isinstance(opened.current, LocalCustody) and opened.key_id == made.key_id


def test_open_custody_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a KMS key id"):
        open_custody("aws-kms", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown key custody"):
        open_custody("vault", data_dir=tmp_path)


# -- aws-kms, against moto's KMS over HTTP -----------------------------------------------------


@pytest.fixture
def kms(moto_endpoint) -> AwsKmsCustody:
    key = moto_endpoint.client("kms").create_key(Description="escrow test")["KeyMetadata"]
    session = moto_endpoint.session()
    return AwsKmsCustody(key["KeyId"], endpoint_url=moto_endpoint.url, session=session)


@pytest.mark.s3
def test_kms_round_trip(kms: AwsKmsCustody) -> None:
    blob = kms.wrap(SECRET, CONTEXT)
    assert kms.unwrap(blob, dict(CONTEXT)) == SECRET

    info = describe_blob(blob)
    assert info.backend == "aws-kms"
    assert info.key_id.startswith("arn:aws:kms:") and info.key_id.endswith(kms.key_id)
    assert set(json.loads(blob)) == {"v", "backend", "key_id", "ct"}


@pytest.mark.s3
def test_kms_refuses_a_wrong_context(kms: AwsKmsCustody) -> None:
    blob = kms.wrap(SECRET, CONTEXT)
    with pytest.raises(CustodyError, match="wrong context") as raised:
        kms.unwrap(blob, {"purpose": "deposit-identity", "deposit": "d2"})
    assert "deposit=d2" in raised.value.message


@pytest.mark.s3
def test_kms_refuses_a_local_blob_naming_the_backend_it_needs(
    kms: AwsKmsCustody, custody: LocalCustody
) -> None:
    with pytest.raises(CustodyError, match=f"wrapped by local key {custody.key_id}"):
        kms.unwrap(custody.wrap(SECRET, CONTEXT), CONTEXT)
    with pytest.raises(CustodyError, match="wrapped by aws-kms key arn:aws:kms:"):
        custody.unwrap(kms.wrap(SECRET, CONTEXT), CONTEXT)


@pytest.mark.s3
def test_kms_errors_become_custody_errors(moto_endpoint) -> None:
    missing = AwsKmsCustody(
        "alias/no-such-key", endpoint_url=moto_endpoint.url, session=moto_endpoint.session()
    )
    with pytest.raises(CustodyError, match="kms encrypt with key alias/no-such-key failed"):
        missing.wrap(SECRET, CONTEXT)
    with pytest.raises(CustodyError):
        missing.check()


@pytest.mark.s3
def test_kms_check_describes_the_key(kms: AwsKmsCustody) -> None:
    assert kms.check().startswith("aws-kms key arn:aws:kms:")


@pytest.mark.s3
def test_open_custody_opens_aws_kms(moto_endpoint, tmp_path: Path) -> None:
    opened = open_custody(
        "aws-kms", data_dir=tmp_path, kms_key_id="alias/x", endpoint_url=moto_endpoint.url
    )
    assert isinstance(opened.current, AwsKmsCustody) and opened.key_id == "alias/x"
