"""Researchers for key tests: users logged in through real sessions, with bearer tokens."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from broker import age

ISSUER = "https://idp.uni.example"


@pytest.fixture
def ssh_key(tmp_path, require_part) -> Path:
    """A real OpenSSH ed25519 private key file (its public key is next to it, `.pub`)."""
    require_part(shutil.which("ssh-keygen") is not None, "ssh-keygen (OpenSSH)")
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ada@laptop.example",
                    "-f", str(path)], check=True)
    return path


@pytest.fixture
def decrypt():
    """decrypt(challenge, identity file text) -> the challenge's secret, with our age code."""

    def run(challenge: str, identity_text: str) -> str:
        out = io.BytesIO()
        age.decrypt(io.BytesIO(challenge.encode()), out, age.parse_identities(identity_text))
        return secret_of(out.getvalue())

    return run


def secret_of(plaintext: bytes) -> str:
    match = re.search(r"^secret: ([0-9a-f]{64})$", plaintext.decode(), re.MULTILINE)
    assert match, plaintext
    return match.group(1)


@pytest.fixture
def secret_from():
    """secret_from(decrypted challenge bytes) -> its secret (e.g. what `age -d` printed)."""
    return secret_of
