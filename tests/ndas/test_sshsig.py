"""SSH signatures (PROTOCOL.sshsig) checked against what the real ssh-keygen makes. Pure."""

import base64
import dataclasses

import pytest

from broker.domain import sshsig
from broker.domain.sshsig import SshSignatureError

TEXT = b"---\nid: x\n---\nThe exact bytes of an agreement.\n"


@pytest.fixture
def key(tmp_path, ssh_keygen):
    return ssh_keygen(tmp_path / "id_ed25519")


@pytest.fixture
def ssh_sign(sign_with_ssh):
    return sign_with_ssh


@pytest.mark.parametrize("hashalg", [None, "sha256", "sha512"])
def test_a_signature_made_by_ssh_keygen_verifies(key, hashalg, ssh_sign):
    armored = ssh_sign(key, TEXT, hashalg=hashalg)
    signature = sshsig.parse_armored(armored)
    assert signature.hash_algorithm == (hashalg or "sha512")
    assert signature.namespace == "escrow-nda"
    assert signature.public_key_line() == " ".join(key.with_suffix(".pub").read_text().split()[:2])
    sshsig.verify(signature, TEXT, "escrow-nda")
    assert sshsig.armor(sshsig.encode_blob(signature)) == armored  # stored form = ssh-keygen's


def test_a_signature_over_other_bytes_does_not_verify(key, ssh_sign):
    signature = sshsig.parse_armored(ssh_sign(key, TEXT))
    with pytest.raises(SshSignatureError, match="does not verify over these"):
        sshsig.verify(signature, TEXT + b" ", "escrow-nda")


def test_a_signature_for_another_namespace_is_refused(key, ssh_sign):
    signature = sshsig.parse_armored(ssh_sign(key, TEXT, namespace="file"))
    with pytest.raises(SshSignatureError, match="namespace 'file', expected 'escrow-nda'"):
        sshsig.verify(signature, TEXT, "escrow-nda")


def test_an_altered_signature_does_not_verify(key, ssh_sign):
    signature = sshsig.parse_armored(ssh_sign(key, TEXT))
    flipped = bytes([signature.signature[0] ^ 1]) + signature.signature[1:]
    with pytest.raises(SshSignatureError, match="does not verify"):
        sshsig.verify(dataclasses.replace(signature, signature=flipped), TEXT, "escrow-nda")
    # the reserved field is signed too
    with pytest.raises(SshSignatureError, match="does not verify"):
        sshsig.verify(dataclasses.replace(signature, reserved=b"x"), TEXT, "escrow-nda")


def test_a_signature_by_an_ecdsa_key_is_refused_clearly(tmp_path, ssh_keygen, ssh_sign):
    ecdsa = ssh_keygen(tmp_path / "id_ecdsa", "ecdsa")
    with pytest.raises(SshSignatureError, match="only ssh-ed25519"):
        sshsig.parse_armored(ssh_sign(ecdsa, TEXT))


@pytest.fixture
def blob(key, ssh_sign) -> bytes:
    armored = ssh_sign(key, TEXT).strip().splitlines()
    return base64.b64decode("".join(armored[1:-1]))


@pytest.mark.parametrize("damage, expected", [
    (lambda b: b[:40], "truncated"),
    (lambda b: b + b"\x00", "trailing bytes"),
    (lambda b: b"SSHSIH" + b[6:], "magic"),
    (lambda b: b[:6] + (2).to_bytes(4, "big") + b[10:], "version 2"),
])
def test_a_damaged_blob_is_refused_saying_how(blob, damage, expected):
    with pytest.raises(SshSignatureError, match=expected):
        sshsig.parse_blob(damage(blob))


@pytest.mark.parametrize("text, expected", [
    ("", "not armored"),
    ("-----BEGIN SSH SIGNATURE-----\n!!!!\n-----END SSH SIGNATURE-----\n", "not valid base64"),
    ("-----BEGIN PGP SIGNATURE-----\nAAAA\n-----END PGP SIGNATURE-----\n", "not armored"),
    ("x" * 5000, "characters long"),
])
def test_text_that_is_not_an_armored_ssh_signature_is_refused(text, expected):
    with pytest.raises(SshSignatureError, match=expected):
        sshsig.parse_armored(text)


def test_an_unknown_hash_algorithm_is_refused(key, ssh_sign):
    signature = sshsig.parse_armored(ssh_sign(key, TEXT))
    blob = sshsig.encode_blob(dataclasses.replace(signature, hash_algorithm="md5"))
    with pytest.raises(SshSignatureError, match="hash algorithm 'md5'"):
        sshsig.parse_blob(blob)
