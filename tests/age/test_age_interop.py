"""Interoperability, both ways: Debian's `age` tool (X25519, ssh-ed25519) and the npm package
`age-encryption` (mlkem768x25519 hybrid), run as subprocesses."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from broker import age
from broker.age.stream import CHUNK_SIZE

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
NODE_SCRIPT = NODE_DIR / "age_hybrid.mjs"
PLAINTEXT = os.urandom(2 * CHUNK_SIZE + 999)


def encrypt_bytes(plaintext: bytes, recipients, **kwargs) -> bytes:
    out = io.BytesIO()
    age.encrypt(io.BytesIO(plaintext), out, recipients, **kwargs)
    return out.getvalue()


def decrypt_bytes(data: bytes, identities) -> bytes:
    out = io.BytesIO()
    age.decrypt(io.BytesIO(data), out, identities)
    return out.getvalue()


@pytest.fixture
def age_tool(require_part):
    require_part(shutil.which("age") is not None, "the Debian age tool (apt install age)")
    return shutil.which("age")


@pytest.fixture
def ssh_key(tmp_path, require_part):
    require_part(shutil.which("ssh-keygen") is not None, "ssh-keygen (apt install openssh-client)")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def run(args, data: bytes, env=None) -> bytes:
    result = subprocess.run(args, input=data, capture_output=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


@pytest.mark.agetool
@pytest.mark.parametrize("armor", [False, True])
def test_age_tool_file_for_x25519_decrypts_here(age_tool, armor):
    identity = age.generate_x25519_identity()
    args = [age_tool, "-r", identity.to_recipient().encode()] + (["-a"] if armor else [])
    assert decrypt_bytes(run(args, PLAINTEXT), [identity]) == PLAINTEXT


@pytest.mark.agetool
@pytest.mark.parametrize("armor", [False, True])
def test_our_x25519_file_decrypts_with_age_tool(age_tool, tmp_path, armor):
    identity = age.generate_x25519_identity()
    identity_file = tmp_path / "key.txt"
    identity_file.write_text(f"# test identity\n{identity.encode()}\n")
    data = encrypt_bytes(PLAINTEXT, [identity.to_recipient()], armor=armor)
    assert run([age_tool, "-d", "-i", str(identity_file)], data) == PLAINTEXT


@pytest.mark.agetool
def test_age_keygen_identity_file_parses_here(tmp_path, require_part):
    require_part(shutil.which("age-keygen") is not None, "age-keygen (apt install age)")
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    [identity] = age.parse_identities(key.read_text())
    public = subprocess.run(
        ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert identity.to_recipient().encode() == public


@pytest.mark.agetool
def test_age_tool_file_for_ssh_ed25519_decrypts_here(age_tool, ssh_key):
    data = run([age_tool, "-R", f"{ssh_key}.pub"], PLAINTEXT)
    identities = age.parse_identities(ssh_key.read_text())
    assert decrypt_bytes(data, identities) == PLAINTEXT


@pytest.mark.agetool
def test_our_ssh_ed25519_file_decrypts_with_age_tool(age_tool, ssh_key):
    recipient = age.parse_recipient(Path(f"{ssh_key}.pub").read_text())
    data = encrypt_bytes(PLAINTEXT, [recipient])
    assert run([age_tool, "-d", "-i", str(ssh_key)], data) == PLAINTEXT


@pytest.mark.agetool
def test_a_grant_header_with_the_unchanged_payload_decrypts_with_age_tool(age_tool, ssh_key):
    escrow = age.generate_x25519_identity()
    data = encrypt_bytes(PLAINTEXT, [escrow.to_recipient()])
    stream = io.BytesIO(data)
    header = age.read_header(stream)
    payload = stream.read()
    researcher = age.parse_recipient(Path(f"{ssh_key}.pub").read_text())
    grant = age.rewrap(header, [escrow], [researcher])
    assert run([age_tool, "-d", "-i", str(ssh_key)], grant + payload) == PLAINTEXT


@pytest.fixture
def node(require_part):
    node = shutil.which("node")
    installed = (NODE_DIR / "node_modules" / "age-encryption" / "package.json").exists()
    require_part(
        node is not None and installed,
        "node and the npm package age-encryption (cd tests/node && npm ci)",
    )
    return node


def node_run(node, *args: str, data: bytes = b"", identity: str | None = None) -> bytes:
    env = {**os.environ, "AGE_IDENTITY": identity} if identity else None
    return run([node, str(NODE_SCRIPT), *args], data, env=env)


@pytest.mark.node
def test_node_hybrid_keys_agree_with_ours(node):
    keys = json.loads(node_run(node, "keygen"))
    identity = age.parse_identity(keys["identity"])
    assert identity.to_recipient().encode() == keys["recipient"]
    ours = age.generate_hybrid_identity()
    theirs = node_run(node, "recipient", identity=ours.encode()).decode().strip()
    assert theirs == ours.to_recipient().encode()


@pytest.mark.node
def test_node_hybrid_file_decrypts_here(node):
    identity = age.generate_hybrid_identity()
    data = node_run(node, "encrypt", identity.to_recipient().encode(), data=PLAINTEXT)
    assert age.header_post_quantum(age.read_header(io.BytesIO(data)))
    assert decrypt_bytes(data, [identity]) == PLAINTEXT


@pytest.mark.node
def test_our_hybrid_file_decrypts_with_node(node):
    keys = json.loads(node_run(node, "keygen"))
    data = encrypt_bytes(PLAINTEXT, [age.parse_recipient(keys["recipient"])])
    assert node_run(node, "decrypt", data=data, identity=keys["identity"]) == PLAINTEXT


@pytest.mark.node
def test_a_hybrid_grant_decrypts_with_node(node):
    escrow = age.generate_hybrid_identity()
    data = encrypt_bytes(PLAINTEXT, [escrow.to_recipient()])
    stream = io.BytesIO(data)
    header = age.read_header(stream)
    keys = json.loads(node_run(node, "keygen"))
    grant = age.rewrap(header, [escrow], [age.parse_recipient(keys["recipient"])])
    assert node_run(node, "decrypt", data=grant + stream.read(), identity=keys["identity"]) == (
        PLAINTEXT
    )
