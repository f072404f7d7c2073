"""The age file format (age-encryption.org/v1, C2SP age), pure Python on `cryptography`.

One module per concern, as in FiloSottile/age: `primitives` (HKDF, wrap AEAD, strict base64),
`bech32`, `x25519`, `scrypt`, `hybrid` (mlkem768x25519), `ssh` (ssh-ed25519), `header`,
`stream` (STREAM payload), `armor`, `parse`, `encryption` (whole files), `errors`.

Keys
    generate_x25519_identity() -> X25519Identity
    generate_hybrid_identity() -> HybridIdentity
    parse_recipient(text: str) -> Recipient          age1…, age1pq1…, "ssh-ed25519 AAAA… comment"
    parse_recipients(text: str) -> list[Recipient]   recipients file (# comments, blank lines)
    parse_identity(text: str) -> Identity            AGE-SECRET-KEY-1…, AGE-SECRET-KEY-PQ-1…
    parse_identities(text: str) -> list[Identity]    identity file, or OpenSSH ed25519 key file
    Recipient: .wrap(file_key) -> list[Stanza], .encode() / str(), .post_quantum, .stanza_type
    Identity:  .unwrap(stanzas) -> bytes | None, .to_recipient(), .encode() (the secret string;
               repr() never shows it), .stanza_type
    ScryptRecipient(passphrase, work_factor=18) / ScryptIdentity(passphrase, max_work_factor=22)

Headers (a grant is a new header for the same file key; the payload does not change)
    new_file_key() -> bytes
    new_header(file_key, recipients, *, allow_classical_with_pq=False) -> bytes
    make_header(file_key, recipients, *, allow_classical_with_pq=False) -> Header
    unwrap_file_key(header: bytes | Header, identities) -> bytes
    rewrap(header, identities, new_recipients, *, allow_classical_with_pq=False) -> bytes
    recipients_post_quantum(recipients) -> bool, header_post_quantum(header) -> bool
    unexpected_stanzas(header, recipients) -> list[str]   stanzas no given recipient accounts for
    parse_header(data: bytes) -> Header, read_header(stream) -> Header (stream left at the
    payload nonce), Header.stanzas / .mac / .encode() / .verify_mac(file_key), Stanza

Files and payloads (constant memory)
    encrypt(src, dst, recipients, *, armor=False, allow_classical_with_pq=False,
            plaintext_hash=None) -> int (plaintext size)
    decrypt(src, dst, identities, *, armored=None, plaintext_hash=None) -> int
    encrypt_payload(src, dst, file_key, *, nonce=None, plaintext_hash=None) -> int
    decrypt_payload(src, dst, file_key, *, plaintext_hash=None) -> int
    PayloadEncryptor(file_key, nonce).encrypt_chunks(plaintext, out, counter, *, final) -> int
    PayloadDecryptor(file_key, nonce).decrypt_chunks(ciphertext, out, counter, *, final) -> int
    encrypted_payload_size(plaintext_size) -> int, plaintext_size(payload_size) -> int
    armor_encode(data) / armor_decode(text), ArmoredWriter(dst), ArmoredReader(src)

Errors (all `AgeError`, an `InvalidInput`): HeaderError, NoIdentityMatched, HeaderMACError,
PayloadError, ArmorError, RecipientError, IdentityError, UnsupportedIdentity.
"""

from broker.age.armor import ArmoredReader, ArmoredWriter, armor_decode, armor_encode
from broker.age.encryption import (
    decrypt,
    encrypt,
    header_post_quantum,
    make_header,
    new_header,
    recipients_post_quantum,
    rewrap,
    unexpected_stanzas,
    unwrap_file_key,
)
from broker.age.errors import (
    AgeError,
    ArmorError,
    HeaderError,
    HeaderMACError,
    IdentityError,
    NoIdentityMatched,
    PayloadError,
    RecipientError,
    UnsupportedIdentity,
)
from broker.age.header import Header, Stanza, parse_header, read_header
from broker.age.hybrid import HybridIdentity, HybridRecipient
from broker.age.interfaces import Identity, Recipient
from broker.age.parse import (
    generate_hybrid_identity,
    generate_x25519_identity,
    parse_identities,
    parse_identity,
    parse_recipient,
    parse_recipients,
)
from broker.age.primitives import FILE_KEY_SIZE, new_file_key
from broker.age.scrypt import ScryptIdentity, ScryptRecipient
from broker.age.ssh import SSHEd25519Identity, SSHEd25519Recipient
from broker.age.stream import (
    CHUNK_SIZE,
    NONCE_SIZE,
    PayloadDecryptor,
    PayloadEncryptor,
    decrypt_payload,
    encrypt_payload,
    encrypted_payload_size,
    plaintext_size,
)
from broker.age.x25519 import X25519Identity, X25519Recipient

__all__ = [
    "CHUNK_SIZE",
    "FILE_KEY_SIZE",
    "NONCE_SIZE",
    "AgeError",
    "ArmorError",
    "ArmoredReader",
    "ArmoredWriter",
    "Header",
    "HeaderError",
    "HeaderMACError",
    "HybridIdentity",
    "HybridRecipient",
    "Identity",
    "IdentityError",
    "NoIdentityMatched",
    "PayloadDecryptor",
    "PayloadEncryptor",
    "PayloadError",
    "Recipient",
    "RecipientError",
    "SSHEd25519Identity",
    "SSHEd25519Recipient",
    "ScryptIdentity",
    "ScryptRecipient",
    "Stanza",
    "UnsupportedIdentity",
    "X25519Identity",
    "X25519Recipient",
    "armor_decode",
    "armor_encode",
    "decrypt",
    "decrypt_payload",
    "encrypt",
    "encrypt_payload",
    "encrypted_payload_size",
    "generate_hybrid_identity",
    "generate_x25519_identity",
    "header_post_quantum",
    "make_header",
    "new_file_key",
    "new_header",
    "parse_header",
    "parse_identities",
    "parse_identity",
    "parse_recipient",
    "parse_recipients",
    "plaintext_size",
    "read_header",
    "recipients_post_quantum",
    "rewrap",
    "unexpected_stanzas",
    "unwrap_file_key",
]
