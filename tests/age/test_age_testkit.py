"""The age testkit (C2SP CCTV vectors, tests/vectors/age): one test per vector file.

Every vector type is implemented (X25519, scrypt, mlkem768x25519, armor, STREAM), so no vector
is skipped. Each test asserts the exact failure kind and, for `success` and `payload failure`,
the SHA-256 of the plaintext released before the end or the error.
"""

from __future__ import annotations

import hashlib
import io

import pytest
from age_support import load_vector, vector_names

from broker import age
from broker.age.header import build_header, read_header
from broker.age.stream import encrypt_payload

KINDS: dict[type[age.AgeError], str] = {
    age.ArmorError: "armor failure",
    age.HeaderError: "header failure",
    age.NoIdentityMatched: "no match",
    age.HeaderMACError: "HMAC failure",
    age.PayloadError: "payload failure",
}
EXPECTED_COUNT = 143  # README.md of the vectors: "There are 143 vectors"


def identities_of(vector):
    return [age.parse_identity(i) for i in vector.identities] + [
        age.ScryptIdentity(p) for p in vector.passphrases
    ]


def decrypt_vector(vector) -> tuple[str, bytes]:
    """(result kind, plaintext released)."""
    out = io.BytesIO()
    try:
        age.decrypt(io.BytesIO(vector.data), out, identities_of(vector), armored=vector.armored)
    except age.AgeError as e:
        return KINDS[type(e)], out.getvalue()
    return "success", out.getvalue()


def test_all_vectors_are_present():
    assert len(vector_names()) == EXPECTED_COUNT


@pytest.mark.parametrize("name", vector_names())
def test_vector(name):
    vector = load_vector(name)
    kind, plaintext = decrypt_vector(vector)
    assert kind == vector.expect
    if vector.expect in ("success", "payload failure"):
        assert hashlib.sha256(plaintext).hexdigest() == vector.payload_sha256
    else:
        assert plaintext == b""


def unarmored(vector) -> bytes:
    return age.armor_decode(vector.data) if vector.armored else vector.data


@pytest.mark.parametrize(
    "name",
    [n for n in vector_names() if load_vector(n).expect in ("success", "payload failure")],
)
def test_header_of_valid_vector_serialises_to_the_same_bytes(name):
    vector = load_vector(name)
    header = read_header(io.BytesIO(unarmored(vector)))
    rebuilt = build_header(vector.file_key, header.stanzas)
    assert rebuilt.encode() == header.encode()


@pytest.mark.parametrize("name", [n for n in vector_names() if load_vector(n).expect == "success"])
def test_payload_of_success_vector_reencrypts_to_the_same_bytes(name):
    vector = load_vector(name)
    stream = io.BytesIO(unarmored(vector))
    read_header(stream)
    payload = stream.read()
    _, plaintext = decrypt_vector(vector)
    out = io.BytesIO()
    encrypt_payload(io.BytesIO(plaintext), out, vector.file_key, nonce=payload[: age.NONCE_SIZE])
    assert out.getvalue() == payload
    assert age.encrypted_payload_size(len(plaintext)) == len(payload)
    assert age.plaintext_size(len(payload)) == len(plaintext)


@pytest.mark.parametrize("name", ["armor_x25519", "armor_full_last_line", "armor_scrypt"])
def test_canonical_armor_reencodes_to_the_same_bytes(name):
    vector = load_vector(name)
    assert age.armor_encode(age.armor_decode(vector.data)) == vector.data


def test_unwrap_file_key_gives_the_vector_file_key():
    vector = load_vector("x25519_multiple_recipients")
    header = read_header(io.BytesIO(vector.data))
    assert age.unwrap_file_key(header, identities_of(vector)) == vector.file_key


def test_no_match_lists_the_stanza_types_tried():
    vector = load_vector("x25519_lowercase")
    with pytest.raises(age.NoIdentityMatched) as info:
        age.decrypt(io.BytesIO(vector.data), io.BytesIO(), identities_of(vector))
    assert "x25519" in info.value.stanza_types
    assert info.value.identity_types == ("X25519",)
