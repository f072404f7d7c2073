"""`escrow hosted worker identity`: a model worker's age identity held by the host's key custody.

The real CLI makes it; the blob on disk holds no secret; it loads back (as `escrow model-worker`
loads it) to the printed recipient with the same custody, and another custody key refuses it
with a clear message and hint that carry no secret.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from live import ESCROW_BIN

from broker.adapters.custody.local import LocalCustody
from broker.config import load_settings
from broker.container import build_custody
from broker.errors import CustodyError
from broker.hosting.identity import CONTEXT, is_wrapped, load_worker_identities


def escrow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ESCROW_BIN, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def host_env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")}
    return {**env, "ESCROW_DATA_DIR": str(data)}


@pytest.mark.parametrize("flag", ["--post-quantum", "--x25519"])
def test_wrapped_identity_round_trip_and_wrong_key(tmp_path: Path, flag: str) -> None:
    env = host_env(tmp_path / "data")
    out = tmp_path / "worker" / "identity.blob"
    made = escrow(env, "hosted", "worker", "identity", "--out", str(out), flag, "--json")
    assert made.returncode == 0, made.stderr
    answer = json.loads(made.stdout.strip().splitlines()[-1])
    recipient = answer["recipient"]
    assert recipient.startswith("age1pq1" if flag == "--post-quantum" else "age1")
    assert answer["key_custody"] == "local"

    blob = out.read_bytes()
    assert b"AGE-SECRET-KEY" not in blob.upper()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert is_wrapped(blob)
    key_file = tmp_path / "data" / "keys" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # made for this host
    # Nothing else the command wrote holds the secret in clear.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"AGE-SECRET-KEY" not in path.read_bytes().upper(), path

    # Loaded as `escrow model-worker` loads it: the host's custody, from its settings.
    identities = load_worker_identities(out, lambda: build_custody(load_settings(env)))
    assert [str(i.to_recipient()) for i in identities] == [recipient]

    # It is never replaced.
    again = escrow(env, "hosted", "worker", "identity", "--out", str(out))
    assert again.returncode != 0 and "not replaced" in again.stderr
    assert out.read_bytes() == blob

    # Another host's key: refused, saying what to do, with no secret in the message.
    other = LocalCustody.create_key_file(tmp_path / "other" / "master.key")
    with pytest.raises(CustodyError) as refused:
        load_worker_identities(out, lambda: other)
    text = refused.value.diagnostics()
    assert f"cannot unwrap the model worker identity {out}" in text
    assert "ESCROW_KEY_FILE" in refused.value.hint
    assert "AGE-SECRET-KEY" not in text.upper()


def test_blob_of_another_purpose_is_refused(tmp_path: Path) -> None:
    custody = LocalCustody.create_key_file(tmp_path / "master.key")
    blob = tmp_path / "other.blob"
    blob.write_bytes(custody.wrap(b"AGE-SECRET-KEY-1NOTREALLY", {"deposit": "d1"}))
    with pytest.raises(CustodyError) as refused:
        load_worker_identities(blob, lambda: custody)
    assert "does not open with context" in refused.value.message
    assert "another purpose" in refused.value.hint
    assert "NOTREALLY" not in refused.value.diagnostics()


def test_plain_identity_file_still_loads(tmp_path: Path) -> None:
    from broker import age

    identity = age.generate_x25519_identity()
    plain = tmp_path / "key.txt"
    plain.write_text(identity.encode() + "\n")

    def no_custody() -> LocalCustody:
        raise AssertionError("a plain identity file needs no custody")

    loaded = load_worker_identities(plain, no_custody)
    assert [str(i.to_recipient()) for i in loaded] == [str(identity.to_recipient())]
    assert CONTEXT == {"purpose": "model-worker identity"}
