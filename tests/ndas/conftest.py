"""NDA tests: a policy directory of their own, and researchers logged in through real sessions."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker import age
from broker.services import keys

ISSUER = "https://idp.uni.example"
REPO_NDAS = Path(__file__).resolve().parents[2] / "policies" / "ndas"
NDA_ID = "acme-research-nda"


def nda_bytes(version: str, body: str = "You agree to keep the weights confidential.\n",
              nda_id: str = NDA_ID, organisation: str = "acme-ai") -> bytes:
    return (f"---\nid: {nda_id}\nversion: {version}\ntitle: Research access agreement\n"
            f"organisation: {organisation}\n---\n# Agreement\n\n{body}").encode()


@pytest.fixture
def make_nda():
    """make_nda(version, body=…, nda_id=…, organisation=…) -> the bytes of an NDA file."""
    return nda_bytes


@pytest.fixture
def write_nda(policy_dir):
    """write_nda(name, bytes): put a text into the test's policies/ndas/."""

    def write(name: str, raw: bytes) -> bytes:
        (policy_dir / "ndas" / name).write_bytes(raw)
        return raw

    return write


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """policies/ndas holding a copy of the shipped acme NDA (version 1)."""
    directory = tmp_path / "policies"
    (directory / "ndas").mkdir(parents=True)
    shutil.copy(REPO_NDAS / "acme-research-nda-v1.md", directory / "ndas")
    return directory


@pytest.fixture
def settings(settings, policy_dir):
    return settings.with_overrides(policy_dir=policy_dir)


@pytest.fixture
def ssh_keygen(require_part):
    require_part(shutil.which("ssh-keygen") is not None, "ssh-keygen (OpenSSH)")

    def make(path: Path, kind: str = "ed25519") -> Path:
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "ada@laptop.example",
                        "-f", str(path)], check=True)
        return path

    return make


@pytest.fixture
def prove_ssh_key(escrow):
    """Register and prove an ssh key for a researcher through the services (fresh login)."""

    def run(person, private_key: Path, *, prove: bool = True) -> str:
        from broker.domain.principals import Principal

        actor = Principal(kind="user", id=str(person.user_id), auth_time=datetime.now(UTC))
        with escrow.uow() as uow:
            key = keys.register_key(uow, actor, private_key.with_suffix(".pub").read_text(),
                                    "laptop", escrow.settings.origin)
            key_id, challenge = key.id, key.challenge
        if prove:
            out = io.BytesIO()
            age.decrypt(io.BytesIO(challenge), out,
                        age.parse_identities(private_key.read_text()))
            secret = re.search(r"^secret: (\w+)$", out.getvalue().decode(), re.M).group(1)
            with escrow.uow() as uow:
                keys.prove_key(uow, actor, key_id, secret)
        return key_id

    return run


def ssh_sign(private_key: Path, data: bytes, namespace: str = "escrow-nda",
             hashalg: str | None = None) -> str:
    """What `ssh-keygen -Y sign` writes (the armored signature), for these bytes."""
    message = private_key.parent / f"message-{namespace}-{hashalg}"
    message.write_bytes(data)
    options = ["-O", f"hashalg={hashalg}"] if hashalg else []
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, *options,
                    "-f", str(private_key), str(message)], check=True, capture_output=True)
    signature = Path(f"{message}.sig")
    text = signature.read_text()
    signature.unlink()
    return text


@pytest.fixture
def sign_with_ssh():
    return ssh_sign
