"""The lab's whole story on real parts: `escrow serve` on PostgreSQL with the objects in a real
S3 server (moto over HTTP), `escrow deposit` from another process, `escrow verify` by the
operator, and a tampered payload caught by name."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from live import postgres_url, start_broker


@pytest.fixture
def broker_on_postgres_and_s3(tmp_path: Path, postgres_template, moto_endpoint):
    admin, template, created = postgres_template
    name = f"escrow_e2e_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    created.append(name)
    bucket = f"escrow-{secrets.token_hex(4)}"
    moto_endpoint.session().client("s3", endpoint_url=moto_endpoint.url).create_bucket(
        Bucket=bucket)
    broker = start_broker(tmp_path, {
        "ESCROW_DATABASE_URL": postgres_url(name),
        "ESCROW_STORAGE_URL": f"s3://{bucket}/escrow",
        "ESCROW_S3_ENDPOINT_URL": moto_endpoint.url,
        "AWS_ACCESS_KEY_ID": moto_endpoint.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto_endpoint.secret_access_key,
        "AWS_DEFAULT_REGION": moto_endpoint.region,
    })
    yield broker
    broker.stop()


def model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "gpt-small"
    (model / "weights").mkdir(parents=True)
    (model / "config.json").write_text('{"layers": 2}')
    (model / "weights" / "model.safetensors").write_bytes(os.urandom(300_000))
    (model / "empty.txt").write_bytes(b"")
    return model


def test_a_deposit_seals_on_postgres_and_s3_and_verifies(broker_on_postgres_and_s3, tmp_path):
    broker = broker_on_postgres_and_s3
    result = broker.escrow("deposit", str(model_dir(tmp_path)), "--model", "acme-ai/gpt-small",
                           "--version", "2024-05", "--json")
    deposit = broker.last_json(result)
    assert deposit["state"] == "sealed"
    verified = broker.escrow("verify", deposit["deposit_id"], "--json")
    assert broker.last_json(verified)["ok"] is True


def test_escrow_verify_names_the_file_whose_payload_was_tampered_with(broker_server, tmp_path):
    result = broker_server.escrow("deposit", str(model_dir(tmp_path)), "--model",
                                  "acme-ai/gpt-small", "--version", "1", "--json")
    deposit = broker_server.last_json(result)
    files = {f["path"]: f for f in deposit["files"]}
    stored = broker_server.data_dir / "objects" / "deposits" / deposit["deposit_id"] / "files"
    index = files["weights/model.safetensors"]["index"]
    payload = stored / f"{index}.payload"
    data = bytearray(payload.read_bytes())
    data[1000] ^= 0x01
    payload.write_bytes(bytes(data))
    verified = broker_server.escrow("verify", deposit["deposit_id"], check=False)
    assert verified.returncode == 1
    assert "BAD  weights/model.safetensors" in verified.stdout
    assert "ok   config.json" in verified.stdout
