"""Recipient and identity strings, identity files, Bech32, and refusals with clear messages."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess

import pytest
from age_support import ssh_ed25519_private_key_text

from broker import age
from broker.age import bech32
from broker.errors import InvalidInput

# From the C2SP age spec, "The X25519 recipient type".
SPEC_X25519_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_X25519_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
SSH_SHORT_BLOB = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x1f" + bytes(31)


def test_spec_x25519_identity_gives_the_spec_recipient():
    identity = age.parse_identity(SPEC_X25519_IDENTITY)
    assert identity.to_recipient().encode() == SPEC_X25519_RECIPIENT
    assert identity.encode() == SPEC_X25519_IDENTITY


@pytest.mark.parametrize("generate", [age.generate_x25519_identity, age.generate_hybrid_identity])
def test_generated_identities_encode_and_parse_back(generate):
    identity = generate()
    again = age.parse_identity(identity.encode())
    assert again.to_recipient() == identity.to_recipient()
    recipient = age.parse_recipient(str(identity.to_recipient()))
    assert recipient == identity.to_recipient()


def test_hybrid_keys_have_the_spec_shapes():
    identity = age.generate_hybrid_identity()
    recipient = identity.to_recipient()
    assert identity.encode().startswith("AGE-SECRET-KEY-PQ-1")
    assert recipient.encode().startswith("age1pq1")
    assert len(recipient.public_key) == 1216
    assert recipient.post_quantum
    assert not age.generate_x25519_identity().to_recipient().post_quantum
    [stanza] = recipient.wrap(age.new_file_key())
    assert stanza.type == "mlkem768x25519" and len(stanza.body) == 32


def test_identity_repr_never_shows_the_secret():
    for identity in (age.generate_x25519_identity(), age.generate_hybrid_identity()):
        secret = identity.encode()
        assert secret[20:40] not in repr(identity)
        assert secret[20:40] not in f"{[identity]}"


def test_identity_file_allows_comments_and_blank_lines():
    a, b = age.generate_x25519_identity(), age.generate_hybrid_identity()
    text = f"# created: today\n# public key: {a.to_recipient()}\n{a.encode()}\n\n{b.encode()}\n"
    parsed = age.parse_identities(text)
    assert [i.to_recipient() for i in parsed] == [a.to_recipient(), b.to_recipient()]


def test_identity_file_errors_name_the_line_not_the_content():
    secret = age.generate_x25519_identity().encode()
    broken = secret[:-1] + ("Q" if secret[-1] != "Q" else "P")
    with pytest.raises(age.IdentityError, match="line 2") as info:
        age.parse_identities(f"# comment\n{broken}\n")
    assert broken[16:] not in info.value.diagnostics()


def test_identity_file_with_no_identities_is_refused():
    with pytest.raises(age.IdentityError, match="no identities"):
        age.parse_identities("# only a comment\n\n")


def test_ssh_identity_file_parses_and_matches_its_public_key():
    text = ssh_ed25519_private_key_text()
    [identity] = age.parse_identities(text)
    assert isinstance(identity, age.SSHEd25519Identity)
    recipient = age.parse_recipient(identity.to_recipient().encode() + " user@host")
    assert recipient == identity.to_recipient()
    assert recipient.encode().endswith(" user@host")
    [stanza] = recipient.wrap(age.new_file_key())
    assert stanza.type == "ssh-ed25519" and len(stanza.args) == 2


def test_ssh_stanza_for_another_key_is_skipped_by_its_tag():
    [mine] = age.parse_identities(ssh_ed25519_private_key_text())
    [other] = age.parse_identities(ssh_ed25519_private_key_text())
    header = age.new_header(age.new_file_key(), [other.to_recipient()])
    with pytest.raises(age.NoIdentityMatched, match=r"ssh-ed25519"):
        age.unwrap_file_key(header, [mine])


def test_passphrase_protected_ssh_key_is_refused_with_a_clear_error(tmp_path, require_part):
    require_part(shutil.which("ssh-keygen") is not None, "ssh-keygen (apt install openssh-client)")
    key = tmp_path / "id"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(key)], check=True
    )
    with pytest.raises(age.UnsupportedIdentity, match="passphrase"):
        age.parse_identities(key.read_text())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a recognised recipient"),
        ("hello", "not a recognised recipient"),
        ("age1", "Bech32"),
        ("age1qqqqqqqq", "Bech32"),
        # a valid X25519 recipient with its last character changed: bad checksum
        (SPEC_X25519_RECIPIENT[:-1] + "q", "checksum"),
        (SPEC_X25519_RECIPIENT.upper(), "lowercase"),
        (SPEC_X25519_RECIPIENT[:10] + SPEC_X25519_RECIPIENT[10:].upper(), "mixes upper and lower"),
        (bech32.encode("age", bytes(31)), "31 bytes, expected 32"),
        (bech32.encode("age", bytes(32)), "low-order point"),
        (bech32.encode("age1pq", bytes(100)), "100 bytes, expected 1216"),
        (bech32.encode("age1tag", bytes(33)), "not supported"),
        (SPEC_X25519_IDENTITY, "secret key"),
        ("ssh-rsa AAAAB3NzaC1yc2E", "not supported"),
        ("ssh-ed25519 not-base64!", "base64"),
        # an Ed25519 key blob one byte short
        ("ssh-ed25519 " + base64.b64encode(SSH_SHORT_BLOB).decode(), "not a valid OpenSSH"),
    ],
)
def test_bad_recipient_strings_are_refused_with_clear_messages(text, message):
    with pytest.raises(age.RecipientError, match=message) as info:
        age.parse_recipient(text)
    assert isinstance(info.value, InvalidInput)
    assert info.value.hint
    if len(text) > 12:
        assert text[8:] not in info.value.diagnostics()  # never echo what may be a secret


def test_recipients_file_allows_comments_and_names_bad_lines():
    a, b = age.generate_x25519_identity(), age.generate_hybrid_identity()
    text = f"# team\n{a.to_recipient()}\n\n{b.to_recipient()}\n"
    assert age.parse_recipients(text) == [a.to_recipient(), b.to_recipient()]
    with pytest.raises(age.RecipientError, match="line 2"):
        age.parse_recipients("# team\nage1nope\n")


def test_bech32_has_no_length_limit_and_checks_case_and_checksum():
    data = bytes(range(256)) * 5
    text = bech32.encode("age1pq", data)
    assert len(text) > 90
    assert bech32.decode(text) == ("age1pq", data)
    assert bech32.decode(text.upper()) == ("age1pq", data)
    with pytest.raises(ValueError, match="checksum"):
        bech32.decode(text[:-1] + ("q" if text[-1] != "q" else "p"))
    with pytest.raises(ValueError, match="mixes"):
        bech32.decode(text[:20] + text[20:].upper())


@pytest.mark.parametrize(
    "text",
    # BIP-173 valid checksums whose data part is whole bytes
    ["A12UEL5L", "a12uel5l", "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw"],
)
def test_bech32_accepts_bip173_test_vectors(text):
    hrp, data = bech32.decode(text)
    assert bech32.encode(hrp, data, upper=text.isupper()) == text


def encrypt_to(recipient, plaintext=b"model weights") -> bytes:
    out = io.BytesIO()
    age.encrypt(io.BytesIO(plaintext), out, [recipient])
    return out.getvalue()


def test_wrong_identity_is_no_match():
    _, other = age.generate_x25519_identity(), age.generate_x25519_identity()
    data = encrypt_to(age.generate_x25519_identity().to_recipient())
    with pytest.raises(age.NoIdentityMatched, match="X25519"):
        age.decrypt(io.BytesIO(data), io.BytesIO(), [other])


def test_flipped_byte_in_a_stanza_body_is_no_match():
    identity = age.generate_x25519_identity()
    data = bytearray(encrypt_to(identity.to_recipient()))
    body_line = data.index(b"\n", data.index(b"-> X25519")) + 1
    data[body_line + 3] = ord("A") if data[body_line + 3] != ord("A") else ord("B")
    with pytest.raises(age.NoIdentityMatched):
        age.decrypt(io.BytesIO(bytes(data)), io.BytesIO(), [identity])


def test_flipped_byte_in_the_mac_is_a_mac_failure():
    identity = age.generate_x25519_identity()
    data = bytearray(encrypt_to(identity.to_recipient()))
    mac_at = data.index(b"\n--- ") + 6
    data[mac_at] = ord("A") if data[mac_at] != ord("A") else ord("B")
    with pytest.raises(age.HeaderMACError, match="MAC"):
        age.decrypt(io.BytesIO(bytes(data)), io.BytesIO(), [identity])


def test_scrypt_work_factor_above_the_limit_is_refused_before_any_work():
    file_key = age.new_file_key()
    header = age.new_header(file_key, [age.ScryptRecipient("pw", work_factor=12)])
    with pytest.raises(age.HeaderError, match="above the limit 11"):
        age.unwrap_file_key(header, [age.ScryptIdentity("pw", max_work_factor=11)])
    assert age.unwrap_file_key(header, [age.ScryptIdentity("pw")]) == file_key


def _bip173_reference(hrp: str, words: list[int]) -> str:
    """BIP-173's reference encoder over 5-bit words, bit by bit, as the spec writes it."""
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + words + [0] * 6
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if (top >> i) & 1 else 0
    polymod = chk ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(bech32.CHARSET[w] for w in words + checksum)


def _words_of(data: bytes) -> list[int]:
    bits = "".join(format(b, "08b") for b in data)
    bits += "0" * (-len(bits) % 5)
    return [int(bits[i : i + 5], 2) for i in range(0, len(bits), 5)]


@pytest.mark.parametrize("size", [0, 1, 2, 4, 5, 31, 32, 33, 64, 1216])
def test_bech32_matches_the_bip173_reference_at_every_length(size):
    data = os.urandom(size)
    text = bech32.encode("age1pq", data)
    assert text == _bip173_reference("age1pq", _words_of(data))
    assert bech32.decode(text) == ("age1pq", data)


def test_bech32_refuses_padding_that_is_not_zero_or_too_long():
    one_byte = _words_of(b"\xff")  # 8 bits in two words: 2 padding bits
    assert bech32.decode(_bip173_reference("age", one_byte)) == ("age", b"\xff")
    with pytest.raises(ValueError, match="padding"):
        bech32.decode(_bip173_reference("age", one_byte[:-1] + [one_byte[-1] | 1]))
    with pytest.raises(ValueError, match="padding"):  # 3 words = 15 bits: 7 padding bits
        bech32.decode(_bip173_reference("age", one_byte + [0]))
