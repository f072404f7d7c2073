"""Whole-file operations: make and open headers, rewrap, encrypt and decrypt streams."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import BinaryIO, cast

from broker.age.armor import ArmoredReader, ArmoredWriter, looks_armored
from broker.age.errors import HeaderError, IdentityError, NoIdentityMatched, RecipientError
from broker.age.header import Header, build_header, parse_header, read_header
from broker.age.hybrid import STANZA_TYPE as HYBRID_STANZA_TYPE
from broker.age.interfaces import Identity, Recipient
from broker.age.primitives import FILE_KEY_SIZE, new_file_key
from broker.age.scrypt import STANZA_TYPE as SCRYPT_STANZA_TYPE
from broker.age.ssh import STANZA_TYPE as SSH_STANZA_TYPE
from broker.age.stream import SupportsUpdate, decrypt_payload, encrypt_payload

POST_QUANTUM_STANZA_TYPES = frozenset({HYBRID_STANZA_TYPE})
_ARMOR_SNIFF_SIZE = 64


def recipients_post_quantum(recipients: Iterable[Recipient]) -> bool:
    """True if there is at least one recipient and all are post-quantum."""
    recipients = list(recipients)
    return bool(recipients) and all(r.post_quantum for r in recipients)


def header_post_quantum(header: bytes | Header) -> bool:
    """True if every stanza of the header is of a post-quantum type (unknown types are not)."""
    if not isinstance(header, Header):
        header = parse_header(header)
    return all(t in POST_QUANTUM_STANZA_TYPES for t in header.stanza_types)


def unexpected_stanzas(header: bytes | Header, recipients: Sequence[Recipient]) -> list[str]:
    """The stanzas of `header` that `recipients` do not account for, described for a person.

    Each recipient accounts for one stanza of its type; an ssh-ed25519 one only for a stanza
    that carries its key's tag. age does not say to whom an X25519 or mlkem768x25519 stanza is
    wrapped (by design), so for those types this bounds the count by the recipients of the type;
    a stanza of any other type (another key type, scrypt, "grease") is always unexpected."""
    if not isinstance(header, Header):
        header = parse_header(header)
    expected = Counter(_stanza_slot(r.stanza_type, getattr(r, "tag", None)) for r in recipients)
    found = Counter(
        _stanza_slot(s.type, s.args[0] if s.type == SSH_STANZA_TYPE and s.args else None)
        for s in header.stanzas
    )
    return [
        f"{count} {slot} stanza{'s' if count > 1 else ''}"
        for slot, count in (found - expected).items()
    ]


def _stanza_slot(stanza_type: str, tag: str | None) -> str:
    return f"{stanza_type} (key tag {tag})" if tag is not None else stanza_type


def make_header(
    file_key: bytes,
    recipients: Iterable[Recipient],
    *,
    allow_classical_with_pq: bool = False,
) -> Header:
    """A header wrapping `file_key` for every recipient, MAC'ed with the file key.

    Refuses an empty recipient list, a passphrase recipient together with any other, and
    post-quantum recipients mixed with classical ones (which would let a future quantum
    computer read a file meant to resist one) unless `allow_classical_with_pq` is set.
    """
    recipients = list(recipients)
    if len(file_key) != FILE_KEY_SIZE:
        raise ValueError(f"file key is {len(file_key)} bytes, expected {FILE_KEY_SIZE}")
    if not recipients:
        raise RecipientError(
            "age encryption: no recipients", hint="encrypt to at least one recipient"
        )
    if len(recipients) > 1 and any(r.stanza_type == SCRYPT_STANZA_TYPE for r in recipients):
        raise RecipientError(
            "age encryption: a passphrase can not be combined with other recipients",
            hint="encrypt with either one passphrase or public-key recipients",
        )
    pq = [r.post_quantum for r in recipients]
    if any(pq) and not all(pq) and not allow_classical_with_pq:
        raise RecipientError(
            "age encryption: post-quantum (age1pq1…) and classical recipients are mixed; "
            "the file would only be as safe as the classical ones",
            hint="use only age1pq1… recipients, or explicitly allow classical recipients "
            "with post-quantum ones",
        )
    return build_header(file_key, (s for r in recipients for s in r.wrap(file_key)))


def new_header(
    file_key: bytes,
    recipients: Iterable[Recipient],
    *,
    allow_classical_with_pq: bool = False,
) -> bytes:
    """The encoded header for `recipients` (see make_header)."""
    return make_header(
        file_key, recipients, allow_classical_with_pq=allow_classical_with_pq
    ).encode()


def unwrap_file_key(header: bytes | Header, identities: Sequence[Identity]) -> bytes:
    """The file key of a header, checked against the header MAC.

    Raises HeaderError (malformed header or stanza), NoIdentityMatched (listing the stanza types
    found and identity types tried) or HeaderMACError.
    """
    if not isinstance(header, Header):
        header = parse_header(header)
    if not identities:
        raise IdentityError(
            "age decryption: no identities given", hint="give at least one identity"
        )
    types = header.stanza_types
    if SCRYPT_STANZA_TYPE in types and len(types) != 1:
        # Spec: a passphrase-encrypted file must have no other way in, whatever we decrypt with.
        raise HeaderError(
            "age header: a scrypt (passphrase) stanza is not the only stanza",
            hint="the file was tampered with or made by a faulty tool",
        )
    for identity in identities:
        file_key = identity.unwrap(header.stanzas)
        if file_key is not None:
            header.verify_mac(file_key)
            return file_key
    raise NoIdentityMatched(types, dict.fromkeys(i.stanza_type for i in identities))


def rewrap(
    header: bytes | Header,
    identities: Sequence[Identity],
    new_recipients: Iterable[Recipient],
    *,
    allow_classical_with_pq: bool = False,
) -> bytes:
    """A new header for `new_recipients` carrying the same file key: a decryption grant.

    The payload is unchanged, so `new header + old payload` is a valid age file.
    """
    file_key = unwrap_file_key(header, identities)
    return new_header(file_key, new_recipients, allow_classical_with_pq=allow_classical_with_pq)


def encrypt(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: Iterable[Recipient],
    *,
    armor: bool = False,
    allow_classical_with_pq: bool = False,
    plaintext_hash: SupportsUpdate | None = None,
) -> int:
    """Encrypt all of `src` to `dst` as an age file; return the plaintext size.

    Constant memory. `plaintext_hash` (e.g. hashlib.sha256()) is fed the plaintext on the way.
    """
    header = new_header(
        file_key := new_file_key(), recipients, allow_classical_with_pq=allow_classical_with_pq
    )
    if not armor:
        dst.write(header)
        return encrypt_payload(src, dst, file_key, plaintext_hash=plaintext_hash)
    writer = ArmoredWriter(dst)
    writer.write(header)
    size = encrypt_payload(src, cast(BinaryIO, writer), file_key, plaintext_hash=plaintext_hash)
    writer.close()
    return size


class _PrefixedReader(io.RawIOBase):
    """`prefix` then the rest of `src`: lets us sniff for armor on unseekable streams."""

    def __init__(self, prefix: bytes, src: BinaryIO) -> None:
        super().__init__()
        self._prefix = memoryview(prefix)
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        dst = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(dst), len(self._prefix))
            dst[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        readinto = getattr(self._src, "readinto", None)
        if readinto is not None:
            read: int = readinto(dst)
            return read
        data = self._src.read(len(dst))
        dst[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        if not self._prefix:
            return self._src.readline(-1 if size is None else size)
        return super().readline(size)


def decrypt(
    src: BinaryIO,
    dst: BinaryIO,
    identities: Sequence[Identity],
    *,
    armored: bool | None = None,
    plaintext_hash: SupportsUpdate | None = None,
) -> int:
    """Decrypt an age file from `src` to `dst`; return the plaintext size.

    `armored=None` detects ASCII armor. Constant memory. Every payload chunk that authenticates
    is written before PayloadError is raised for a damaged or truncated payload, so on error
    `dst` holds a correct prefix of the plaintext that must not be taken for the whole.
    """
    reader: BinaryIO = src
    if armored is None:
        prefix = src.read(_ARMOR_SNIFF_SIZE)
        armored = looks_armored(prefix)
        reader = cast(BinaryIO, _PrefixedReader(prefix, src))
    if armored:
        reader = cast(BinaryIO, ArmoredReader(reader))
    header = read_header(reader)
    file_key = unwrap_file_key(header, identities)
    return decrypt_payload(reader, dst, file_key, plaintext_hash=plaintext_hash)
