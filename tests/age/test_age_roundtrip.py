"""Whole-file round trips, rewrap (grants), and what headers refuse."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from age_support import ssh_ed25519_private_key_text

from broker import age
from broker.age.stream import CHUNK_SIZE


def x25519_pair():
    identity = age.generate_x25519_identity()
    return identity, identity.to_recipient()


def hybrid_pair():
    identity = age.generate_hybrid_identity()
    return identity, identity.to_recipient()


def ssh_pair():
    [identity] = age.parse_identities(ssh_ed25519_private_key_text())
    return identity, age.parse_recipient(identity.to_recipient().encode())


def scrypt_pair():
    # A low work factor keeps the test fast; the format is the same.
    return age.ScryptIdentity("correct horse"), age.ScryptRecipient("correct horse", 10)


PAIRS = {
    "x25519": x25519_pair,
    "hybrid": hybrid_pair,
    "ssh-ed25519": ssh_pair,
    "scrypt": scrypt_pair,
}


def encrypt_bytes(plaintext: bytes, recipients, **kwargs) -> bytes:
    out = io.BytesIO()
    age.encrypt(io.BytesIO(plaintext), out, recipients, **kwargs)
    return out.getvalue()


def decrypt_bytes(data: bytes, identities, **kwargs) -> bytes:
    out = io.BytesIO()
    age.decrypt(io.BytesIO(data), out, identities, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize("kind", PAIRS)
def test_round_trip_for_every_recipient_type(kind):
    identity, recipient = PAIRS[kind]()
    plaintext = os.urandom(3 * CHUNK_SIZE + 17)
    assert decrypt_bytes(encrypt_bytes(plaintext, [recipient]), [identity]) == plaintext


@pytest.mark.parametrize("kind", PAIRS)
def test_armored_round_trip_for_every_recipient_type(kind):
    identity, recipient = PAIRS[kind]()
    plaintext = os.urandom(1000)
    armored = encrypt_bytes(plaintext, [recipient], armor=True)
    assert armored.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    assert decrypt_bytes(armored, [identity]) == plaintext  # armor is detected


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE])
def test_sizes_at_chunk_boundaries_round_trip(size):
    identity, recipient = x25519_pair()
    plaintext = os.urandom(size)
    data = encrypt_bytes(plaintext, [recipient])
    header = age.read_header(stream := io.BytesIO(data))
    payload = stream.read()
    assert len(payload) == age.encrypted_payload_size(size)
    assert age.plaintext_size(len(payload)) == size
    assert decrypt_bytes(header.encode() + payload, [identity]) == plaintext


def test_empty_file_is_one_empty_final_chunk():
    identity, recipient = x25519_pair()
    data = encrypt_bytes(b"", [recipient])
    header = age.read_header(stream := io.BytesIO(data))
    assert len(stream.read()) == age.NONCE_SIZE + 16
    assert decrypt_bytes(data, [identity]) == b""
    assert header.stanza_types == ("X25519",)


def test_encrypt_and_decrypt_feed_the_plaintext_hash():
    identity, recipient = x25519_pair()
    plaintext = os.urandom(5 * CHUNK_SIZE // 2)
    enc_hash, dec_hash = hashlib.sha256(), hashlib.sha256()
    out = io.BytesIO()
    assert age.encrypt(io.BytesIO(plaintext), out, [recipient], plaintext_hash=enc_hash) == len(
        plaintext
    )
    size = age.decrypt(
        io.BytesIO(out.getvalue()), io.BytesIO(), [identity], plaintext_hash=dec_hash
    )
    assert size == len(plaintext)
    assert enc_hash.digest() == dec_hash.digest() == hashlib.sha256(plaintext).digest()


def test_a_file_for_several_recipients_opens_with_each_identity():
    pairs = [x25519_pair(), x25519_pair(), ssh_pair()]
    data = encrypt_bytes(b"weights", [r for _, r in pairs])
    for identity, _ in pairs:
        assert decrypt_bytes(data, [identity]) == b"weights"


def test_identities_are_tried_in_turn():
    wrong, _ = x25519_pair()
    right, recipient = ssh_pair()
    assert decrypt_bytes(encrypt_bytes(b"x", [recipient]), [wrong, right]) == b"x"


@pytest.mark.parametrize("grantee", ["x25519", "hybrid", "ssh-ed25519"])
def test_rewrap_makes_a_header_that_decrypts_the_unchanged_payload(grantee):
    escrow_identity, escrow_recipient = hybrid_pair()
    plaintext = os.urandom(CHUNK_SIZE + 5)
    data = encrypt_bytes(plaintext, [escrow_recipient])
    stream = io.BytesIO(data)
    header = age.read_header(stream)
    payload = stream.read()

    grantee_identity, grantee_recipient = PAIRS[grantee]()
    granted = age.rewrap(
        header.encode(), [escrow_identity], [grantee_recipient], allow_classical_with_pq=True
    )

    assert decrypt_bytes(granted + payload, [grantee_identity]) == plaintext
    assert age.unwrap_file_key(granted, [grantee_identity]) == age.unwrap_file_key(
        header, [escrow_identity]
    )
    with pytest.raises(age.NoIdentityMatched):
        age.unwrap_file_key(header, [grantee_identity])  # the original header is unchanged


def test_rewrap_needs_an_identity_of_the_original_header():
    _, recipient = x25519_pair()
    stranger, _ = x25519_pair()
    header = age.new_header(age.new_file_key(), [recipient])
    with pytest.raises(age.NoIdentityMatched):
        age.rewrap(header, [stranger], [recipient])


def test_new_header_refuses_an_empty_recipient_list():
    with pytest.raises(age.RecipientError, match="no recipients"):
        age.new_header(age.new_file_key(), [])


def test_new_header_refuses_mixing_post_quantum_and_classical_recipients():
    _, pq = hybrid_pair()
    _, classical = x25519_pair()
    with pytest.raises(age.RecipientError, match="post-quantum"):
        age.new_header(age.new_file_key(), [pq, classical])


def test_mixing_post_quantum_and_classical_can_be_allowed_and_is_reported():
    _, pq = hybrid_pair()
    _, classical = x25519_pair()
    header = age.new_header(age.new_file_key(), [pq, classical], allow_classical_with_pq=True)
    assert not age.header_post_quantum(header)
    assert not age.recipients_post_quantum([pq, classical])


def test_hybrid_only_headers_and_recipient_sets_are_post_quantum():
    _, pq1 = hybrid_pair()
    _, pq2 = hybrid_pair()
    assert age.recipients_post_quantum([pq1, pq2])
    assert age.header_post_quantum(age.new_header(age.new_file_key(), [pq1, pq2]))
    assert not age.recipients_post_quantum([])


def test_a_passphrase_can_not_be_combined_with_other_recipients():
    _, scrypt = scrypt_pair()
    _, other = x25519_pair()
    with pytest.raises(age.RecipientError, match="passphrase"):
        age.new_header(age.new_file_key(), [scrypt, other])


def test_unwrap_refuses_an_empty_identity_list():
    _, recipient = x25519_pair()
    with pytest.raises(age.IdentityError):
        age.unwrap_file_key(age.new_header(age.new_file_key(), [recipient]), [])


def test_read_header_leaves_the_stream_at_the_payload_nonce():
    _, recipient = x25519_pair()
    data = encrypt_bytes(b"abc", [recipient])
    stream = io.BytesIO(data)
    header = age.read_header(stream)
    assert stream.tell() == len(header.encode())
    assert data[: stream.tell()].endswith(b"\n")
    assert len(data) - stream.tell() == age.encrypted_payload_size(3)


def test_parse_header_refuses_trailing_data():
    _, recipient = x25519_pair()
    header = age.new_header(age.new_file_key(), [recipient])
    assert age.parse_header(header).encode() == header
    with pytest.raises(age.HeaderError, match="after the MAC"):
        age.parse_header(header + b"x")


def test_unknown_stanzas_are_ignored_but_covered_by_the_mac():
    identity, recipient = x25519_pair()
    file_key = age.new_file_key()
    grease = age.Stanza("example.com/grease", ("a", "b"), os.urandom(100))
    header = age.make_header(file_key, [recipient])
    with_grease = age.header.build_header(file_key, (grease, *header.stanzas))
    assert age.unwrap_file_key(with_grease.encode(), [identity]) == file_key
    tampered = with_grease.encode().replace(b"example.com/grease", b"example.com/greasf")
    with pytest.raises(age.HeaderMACError):
        age.unwrap_file_key(tampered, [identity])


def test_stanza_body_of_whole_lines_ends_with_an_empty_line():
    stanza = age.Stanza("t", (), bytes(48))
    assert stanza.encode() == b"-> t\n" + b"A" * 64 + b"\n\n"
    assert age.Stanza("t").encode() == b"-> t\n\n"
