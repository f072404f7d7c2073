"""Checkpoints: C2SP tlog-checkpoint bodies in signed notes, signed with a real Ed25519 key."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.auditlog import checkpoint as cp
from broker.auditlog.checkpoint import CheckpointError

ORIGIN = "escrow.example.org/log"
ROOT = hashlib.sha256(b"some root").digest()


def raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def signed(private: Ed25519PrivateKey, body: bytes, name: str = ORIGIN) -> str:
    """What the broker does: sign the body elsewhere, then wrap the signature."""
    key_id = cp.note_key_id(name, raw_public(private))
    return cp.format_note(body, name, key_id, private.sign(body))


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def verifier(key) -> str:
    return cp.format_verifier_key(ORIGIN, raw_public(key))


@pytest.fixture
def note(key) -> str:
    return signed(key, cp.checkpoint_body(ORIGIN, 42, ROOT))


# --- known answers --------------------------------------------------------------------------


def test_key_id_is_the_first_four_bytes_of_sha256_of_name_newline_type_and_key():
    public_key = bytes(range(32))
    by_hand = hashlib.sha256(b"example.com/log" + b"\x0a" + b"\x01" + public_key).digest()[:4]
    assert cp.note_key_id("example.com/log", public_key) == by_hand


def test_verifier_key_is_name_hex_id_and_base64_of_type_and_key():
    public_key = bytes(range(32))
    key_id = hashlib.sha256(b"example.com/log\n\x01" + public_key).digest()[:4].hex()
    encoded = base64.b64encode(b"\x01" + public_key).decode()
    assert cp.format_verifier_key("example.com/log", public_key) == (
        f"example.com/log+{key_id}+{encoded}"
    )


def test_checkpoint_body_is_origin_size_and_base64_root_each_on_a_line():
    assert cp.checkpoint_body("example.com/log", 7, bytes(32)) == (
        b"example.com/log\n7\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
    )


def test_a_note_is_the_body_a_blank_line_and_an_em_dash_signature_line():
    text = cp.format_note(b"hello\n", "k", b"\x01\x02\x03\x04", bytes(64))
    encoded = base64.b64encode(b"\x01\x02\x03\x04" + bytes(64)).decode()
    assert text == f"hello\n\n\u2014 k {encoded}\n"


def test_the_services_verifier_key_is_the_same_string():
    from broker.services.signing import note_verifier_key

    public_key = bytes(range(32))
    assert note_verifier_key(ORIGIN, public_key) == cp.format_verifier_key(ORIGIN, public_key)


# --- round trip -----------------------------------------------------------------------------


def test_a_signed_checkpoint_verifies_and_gives_back_its_fields(note, verifier):
    checkpoint = cp.verify_checkpoint(note, verifier)
    assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (ORIGIN, 42, ROOT)
    assert checkpoint.text == note


def test_a_parsed_verifier_key_verifies_the_same_as_its_string(key, note, verifier):
    parsed = cp.parse_verifier_key(verifier)
    public_key = raw_public(key)
    assert parsed == cp.VerifierKey(ORIGIN, cp.note_key_id(ORIGIN, public_key), public_key)
    assert str(parsed) == verifier
    assert cp.verify_checkpoint(note, parsed).size == 42


def test_parsing_without_a_key_reads_the_same_fields(note):
    assert cp.parse_checkpoint(note) == cp.Checkpoint(ORIGIN, 42, ROOT, note)


def test_the_empty_tree_has_a_checkpoint_too(key, verifier):
    note = signed(key, cp.checkpoint_body(ORIGIN, 0, hashlib.sha256(b"").digest()))
    assert cp.verify_checkpoint(note, verifier).size == 0


def test_extension_lines_after_the_root_are_signed_and_ignored(key, verifier):
    body = cp.checkpoint_body(ORIGIN, 42, ROOT) + b"an extension\n"
    assert cp.verify_checkpoint(signed(key, body), verifier).root == ROOT


def test_signatures_by_other_keys_are_ignored(key, note, verifier):
    witness = Ed25519PrivateKey.generate()
    cosigned = note + signed(witness, b"x\n", name="witness.example").split("\n\n", 1)[1]
    assert cp.verify_checkpoint(cosigned, verifier).size == 42


# --- rejected -------------------------------------------------------------------------------


def test_a_checkpoint_signed_by_another_key_is_not_signed_by_ours(note):
    other = cp.format_verifier_key(ORIGIN, raw_public(Ed25519PrivateKey.generate()))
    with pytest.raises(CheckpointError, match=f"checkpoint is not signed by {ORIGIN}\\+"):
        cp.verify_checkpoint(note, other)


def test_a_forged_signature_with_our_key_id_does_not_verify(key, verifier):
    forger = Ed25519PrivateKey.generate()
    body = cp.checkpoint_body(ORIGIN, 42, ROOT)
    our_key_id = cp.note_key_id(ORIGIN, raw_public(key))
    forged = cp.format_note(body, ORIGIN, our_key_id, forger.sign(body))
    with pytest.raises(CheckpointError, match="signature by .* does not verify"):
        cp.verify_checkpoint(forged, verifier)


def test_our_key_under_another_name_is_not_our_signer(key, verifier):
    note = signed(key, cp.checkpoint_body(ORIGIN, 42, ROOT), name="someone.else/log")
    with pytest.raises(CheckpointError, match="is not signed by"):
        cp.verify_checkpoint(note, verifier)


def test_an_origin_other_than_the_key_name_is_refused(key):
    note = signed(key, cp.checkpoint_body("another.origin/log", 42, ROOT))
    with pytest.raises(CheckpointError, match="origin 'another.origin/log' does not match"):
        cp.verify_checkpoint(note, cp.format_verifier_key(ORIGIN, raw_public(key)))


def test_a_changed_byte_in_the_root_breaks_the_signature(note, verifier):
    root_line = note.split("\n")[2]
    changed = "B" if root_line[0] != "B" else "C"
    tampered = note.replace(root_line, changed + root_line[1:], 1)
    with pytest.raises(CheckpointError, match="does not verify"):
        cp.verify_checkpoint(tampered, verifier)


def test_a_changed_tree_size_breaks_the_signature(note, verifier):
    tampered = note.replace("\n42\n", "\n43\n", 1)
    with pytest.raises(CheckpointError, match="does not verify"):
        cp.verify_checkpoint(tampered, verifier)


def test_a_note_without_signatures_is_refused(note, verifier):
    unsigned = note.split("\n\n", 1)[0] + "\n\n"
    with pytest.raises(CheckpointError, match="no signature lines"):
        cp.verify_checkpoint(unsigned, verifier)


def test_a_body_alone_is_refused(verifier):
    with pytest.raises(CheckpointError, match="no blank line"):
        cp.verify_checkpoint(cp.checkpoint_body(ORIGIN, 42, ROOT).decode(), verifier)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda n: n + "garbage\n", "must start with an em dash"),
        (lambda n: n + "garbage", "last one lacks its newline"),
        (lambda n: n[:-1], "last one lacks its newline"),
        (lambda n: n.replace("\u2014", "-"), "must start with an em dash"),
        (lambda n: n.replace("\n", "\r\n"), "control character"),
        (lambda n: n + "\u2014 k\n", "want '— <key name> <base64 signature>'"),
        (lambda n: n + "\u2014 k AAAA\n", "too short"),
        (lambda n: n + "\u2014 k not*base64\n", "not standard base64"),
        (lambda n: n.replace("\n42\n", "\n042\n"), "tree size '042' is not a decimal uint64"),
        (lambda n: n.replace("\n42\n", "\n-1\n"), "tree size '-1'"),
        (lambda n: n.replace("\n42\n", "\n\u0664\u0662\n"), "is not a decimal uint64"),
        (lambda n: n.replace("\n42\n", "\n18446744073709551616\n"), "not a decimal uint64"),
        (lambda n: n.replace("\n42\n", "\n"), "got 2 lines"),
        (lambda n: n.replace(ORIGIN + "\n", "\n", 1), "with an empty one"),
    ],
)
def test_malformed_notes_are_refused_with_what_is_wrong(note, verifier, change, message):
    with pytest.raises(CheckpointError, match=message):
        cp.verify_checkpoint(change(note), verifier)
    with pytest.raises(CheckpointError, match=message):
        cp.parse_checkpoint(change(note))


def test_a_root_that_is_not_32_bytes_is_refused(key, verifier):
    body = f"{ORIGIN}\n42\n{base64.b64encode(b'short').decode()}\n".encode()
    with pytest.raises(CheckpointError, match="root hash is 5 bytes, want 32"):
        cp.verify_checkpoint(signed(key, body), verifier)


# --- verifier keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-plus-signs", "want <name>\\+<key id>\\+<key>"),
        ("name+1234+AQ==", "not 8 hex digits"),
        ("name+zzzzzzzz+AQ==", "not 8 hex digits"),
        ("+01234567+AQ==", "must be non-empty"),
        ("na me+01234567+AQ==", "without spaces"),
        ("name+01234567+!!", "not standard base64"),
        ("name+01234567+" + base64.b64encode(b"\x02" + bytes(32)).decode(), "type 02"),
        ("name+01234567+" + base64.b64encode(b"\x01" + bytes(31)).decode(), "31 bytes, want 32"),
        ("name+01234567+" + base64.b64encode(b"\x01" + bytes(32)).decode(), "does not belong"),
    ],
)
def test_malformed_verifier_keys_are_refused(text, message):
    with pytest.raises(CheckpointError, match=message):
        cp.parse_verifier_key(text)


# --- building refuses what it could not sign ------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "size", "root", "message"),
    [
        ("", 1, ROOT, "origin must be one non-empty line"),
        ("a\nb", 1, ROOT, "origin must be one non-empty line"),
        ("a\tb", 1, ROOT, "control character"),
        (ORIGIN, -1, ROOT, "tree size must be in 0..2\\^64-1"),
        (ORIGIN, 2**64, ROOT, "tree size must be in"),
        (ORIGIN, True, ROOT, "tree size must be in"),
        (ORIGIN, 1, ROOT[:31], "root hash is 31 bytes, want 32"),
    ],
)
def test_checkpoint_body_refuses_bad_fields(origin, size, root, message):
    with pytest.raises(CheckpointError, match=message):
        cp.checkpoint_body(origin, size, root)


@pytest.mark.parametrize(
    ("body", "name", "key_id", "signature", "message"),
    [
        (b"no newline", "k", bytes(4), bytes(64), "end with a newline"),
        (b"\n", "k", bytes(4), bytes(64), "non-empty"),
        (b"\xff\n", "k", bytes(4), bytes(64), "not valid UTF-8"),
        (b"x\n", "a+b", bytes(4), bytes(64), "without spaces or '\\+'"),
        (b"x\n", "k", bytes(3), bytes(64), "key id is 3 bytes, want 4"),
        (b"x\n", "k", bytes(4), bytes(63), "signature is 63 bytes, want 64"),
    ],
)
def test_format_note_refuses_what_no_verifier_would_accept(body, name, key_id, signature, message):
    with pytest.raises(CheckpointError, match=message):
        cp.format_note(body, name, key_id, signature)
