"""ESCROW_KMS_ENDPOINT_URL points aws-kms custody at a KMS other than AWS's (here moto over
HTTP), with boto3's own AWS_ENDPOINT_URL_KMS unset: the broker wraps and unwraps through it."""

from __future__ import annotations

import pytest

from broker.config import load_settings
from broker.container import build_escrow


@pytest.mark.s3
def test_the_kms_endpoint_setting_is_used(moto_endpoint, tmp_path, monkeypatch):
    key_id = moto_endpoint.client("kms").create_key()["KeyMetadata"]["KeyId"]
    monkeypatch.delenv("AWS_ENDPOINT_URL_KMS", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for name, value in moto_endpoint.env().items():
        monkeypatch.setenv(name, value)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "url-signing.key").write_text("00" * 32)
    env = {
        "ESCROW_DATA_DIR": str(tmp_path),
        "ESCROW_KEY_CUSTODY": "aws-kms",
        "ESCROW_KMS_KEY_ID": key_id,
    }
    escrow = build_escrow(load_settings({**env, "ESCROW_KMS_ENDPOINT_URL": moto_endpoint.url}))
    try:
        context = {"deposit": "d1"}
        blob = escrow.custody.wrap(b"secret identity", context)
        assert escrow.custody.unwrap(blob, context) == b"secret identity"
        assert escrow.custody.check()
    finally:
        escrow.engine.dispose()

    escrow = build_escrow(load_settings(env))  # without it: AWS itself, which is not reachable
    try:
        assert escrow.custody.current.endpoint_url is None  # type: ignore[attr-defined]
    finally:
        escrow.engine.dispose()
