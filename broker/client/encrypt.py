"""Produce one part's ciphertext in blocks, fingerprint it, and hash whole files.

Speed (see PERF-NOTES): each part worker reads its own byte range of the file into a reused
4 MiB buffer, encrypts it into another and hands that to the socket; the plaintext SHA-256 is
computed by a separate thread reading the file in order (the second read comes from the page
cache). Both ChaCha20-Poly1305 in `cryptography` and `hashlib` release the GIL, so the two run
on two cores. Memory per worker is two 4 MiB buffers, whatever the file or part size.

A part's fingerprint proves, before anything is re-sent under a kept key, that the part's
plaintext is the one journaled (see `journal.py`). For a file this client encrypts it is a
Poly1305 tag of the part's plaintext under a one-time key derived from the file key and the part
number (`cryptography`'s Poly1305, HKDF-SHA-256): Poly1305 with a secret key is an
almost-universal hash, so two different plaintexts of a 64 MiB part share a tag with probability
under 2^-80, whatever the edit, and it runs at ~12 GB/s here, so journaling it before a part is
sent costs a read of the part, not a second encryption. The part's blocks are read (copied)
into a private buffer and both the tag and the ciphertext are computed from that copy, so the
check made before the last block leaves compares exactly the plaintext that was encrypted, even
if the file is written meanwhile. For a file encrypted elsewhere (`age -r`) it is SHA-256 over
the part's Poly1305 chunk tags, which are read, not computed: under the lab's key and nonce they
change with any change to the part.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.poly1305 import Poly1305

from broker import age
from broker.domain.parts import CHUNK_SIZE, NONCE_SIZE, TAG_SIZE, Part
from broker.errors import EscrowError

ENCRYPTED_CHUNK = CHUNK_SIZE + TAG_SIZE
BLOCK_CHUNKS = 64  # 4 MiB of plaintext per read, encrypt and send (measured sweet spot)
BLOCK_SIZE = BLOCK_CHUNKS * CHUNK_SIZE
HASH_BLOCK = 8 * 1024 * 1024


class FileChanged(EscrowError):
    """The local file changed while it was being read."""

    status = 409
    title = "file changed"


def file_changed(path: str, what: str) -> FileChanged:
    return FileChanged(
        f"{path}: {what} while it was being deposited",
        hint="let whatever writes it finish, then run the same command again; the file starts "
        "over with a new key, other files are kept",
    )


def part_cipher_offset(part: Part) -> int:
    """Where a part's ciphertext starts in the payload (part 1 starts with the nonce)."""
    return 0 if part.number == 1 else NONCE_SIZE + part.first_chunk * ENCRYPTED_CHUNK


def update_with_tags(fingerprint: hashlib._Hash, ciphertext: memoryview) -> None:
    """Feed the Poly1305 tag of every encrypted chunk in `ciphertext` (whole chunks, the last
    possibly short) to `fingerprint`."""
    end = len(ciphertext)
    pos = ENCRYPTED_CHUNK
    while pos <= end:
        fingerprint.update(ciphertext[pos - TAG_SIZE : pos])
        pos += ENCRYPTED_CHUNK
    if (end % ENCRYPTED_CHUNK) and end >= TAG_SIZE:
        fingerprint.update(ciphertext[end - TAG_SIZE : end])


class _Buffers(threading.local):
    """Per-thread reusable output buffer: constant memory however many parts a worker sends."""

    def __init__(self) -> None:
        self.plain = bytearray(BLOCK_SIZE)
        self.cipher = bytearray(NONCE_SIZE + BLOCK_CHUNKS * ENCRYPTED_CHUNK)


_buffers = _Buffers()
_EMPTY = memoryview(b"")


def mapped(handle: int, offset: int, size: int, path: str) -> memoryview:
    """A read-only view of bytes [offset, offset+size) of an open file, without copying them.

    Why mmap rather than read(): reading copies every byte from the page cache into a buffer,
    and the readers that need no private copy (the hash pass, a pre-encrypted file's parts) need
    not pay for one; on these machines a copy costs ~0.1-0.8 CPU-s per GiB (bench/deposit.py,
    depending on the host). The window is unmapped after use, so RSS
    stays at a few windows whatever the file size: the mapping is unmapped as soon as the last
    view of it is dropped (CPython frees it then), not closed explicitly, because a consumer
    such as an HTTP body loop may still hold the view when it asks for the next block. The
    size is checked first because touching
    a mapping past the end of a file that shrank would kill the process (SIGBUS); a file cut
    between that check and the read is the one case left, and the resume journal recovers
    from it like from a kill -9.
    """
    if size == 0:
        return _EMPTY
    if os.fstat(handle).st_size < offset + size:
        raise file_changed(path, "became shorter")
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    window = mmap.mmap(handle, offset + size - start, offset=start, prot=mmap.PROT_READ,
                       flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
    return memoryview(window)[offset - start :]


def fingerprint_secret(file_key: bytes, nonce: bytes) -> bytes:
    """The per-file secret that keys part fingerprints: HKDF-SHA-256 of the file key, salted
    with the payload nonce like age's payload key, under its own label, so it is independent of
    every key age derives."""
    return HKDF(SHA256(), 32, salt=nonce, info=b"weights-escrow part fingerprint").derive(file_key)


@dataclass(frozen=True)
class PlainSource:
    """A plaintext file to encrypt part by part with one key and nonce."""

    source: str  # path to open
    path: str  # deposit path, for messages
    encryptor: age.PayloadEncryptor
    secret: bytes = field(repr=False)  # fingerprint_secret(file key, nonce): never printed

    @classmethod
    def keyed(cls, source: str, path: str, file_key: bytes, nonce: bytes) -> PlainSource:
        return cls(source, path, age.PayloadEncryptor(file_key, nonce),
                   fingerprint_secret(file_key, nonce))

    def blocks(self, part: Part, on_fingerprint: Callable[[str], None] | None = None,
               ) -> Iterator[memoryview]:
        """The part's ciphertext in blocks of up to 4 MiB (views of a reused buffer: each is
        valid until the next is asked for). `on_fingerprint` is called with the fingerprint of
        the plaintext just encrypted once the last block is ready, before that block is handed
        out: the depositor journals the fingerprint before the part's first byte is sent
        (write-ahead) and uses this call to check that what it sent is what it journaled;
        raising there keeps the part from ever being complete at the store."""
        cipher = memoryview(_buffers.cipher)
        mac = self._mac(part)
        done = 0
        for plain, last in self._plaintext(part):
            head = 0
            if part.number == 1 and done == 0:
                cipher[:NONCE_SIZE] = self.encryptor.nonce
                head = NONCE_SIZE
            mac.update(plain)
            n = self.encryptor.encrypt_chunks(plain, cipher[head:],
                                              part.first_chunk + done // CHUNK_SIZE,
                                              final=part.is_last and last)
            done += len(plain)
            if last and on_fingerprint is not None:
                on_fingerprint(mac.finalize().hex())
            yield cipher[: head + n]

    def fingerprint(self, part: Part) -> str:
        """The part's fingerprint, from a read of its plaintext (nothing is encrypted or sent)."""
        mac = self._mac(part)
        for plain, _ in self._plaintext(part):
            mac.update(plain)
        return mac.finalize().hex()

    def _mac(self, part: Part) -> Poly1305:
        # One key per part: the part's attempts are the only messages ever tagged with it.
        info = b"part %d" % part.number
        return Poly1305(HKDFExpand(SHA256(), 32, info=info).derive(self.secret))

    def _plaintext(self, part: Part) -> Iterator[tuple[memoryview, bool]]:
        """The part's plaintext in blocks of up to 4 MiB, copied into this thread's buffer (a
        private copy: a writer cannot change it between the fingerprint and the encryption),
        each with whether it is the last. Checks that the file neither shrank nor grew."""
        buffer = memoryview(_buffers.plain)
        handle = os.open(self.source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            done = 0
            while True:
                size = min(BLOCK_SIZE, part.plain_size - done)
                read_exactly(handle, buffer[:size], part.plain_offset + done, self.path)
                done += size
                last = done >= part.plain_size
                if last and part.is_last and os.pread(handle, 1, part.plain_offset + done):
                    raise file_changed(self.path, "grew")
                yield buffer[:size], last
                if last:
                    return
        finally:
            os.close(handle)


def read_exactly(handle: int, into: memoryview, offset: int, path: str) -> None:
    """Fill `into` from the file at `offset`; a file that ends first became shorter."""
    filled = 0
    while filled < len(into):
        got = os.preadv(handle, [into[filled:]], offset + filled)
        if got == 0:
            raise file_changed(path, "became shorter")
        filled += got


@dataclass(frozen=True)
class CipherSource:
    """An age file made elsewhere (`age -r`): parts are byte ranges of its payload."""

    source: str
    path: str
    payload_offset: int  # the header's length: where the payload nonce starts

    def blocks(self, part: Part, on_fingerprint: Callable[[str], None] | None = None,
               ) -> Iterator[memoryview]:
        fingerprint = hashlib.sha256()
        start = self.payload_offset + part_cipher_offset(part)
        total = part.cipher_size
        handle = os.open(self.source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            done = 0
            # Blocks of whole encrypted chunks (after the nonce, in part 1's first block), so
            # the tags sit at fixed places for the fingerprint. The file's bytes are sent as
            # they are, straight from the mapping.
            head = NONCE_SIZE if part.number == 1 else 0
            while True:
                size = min(head + BLOCK_CHUNKS * ENCRYPTED_CHUNK, total - done)
                last = done + size >= total
                view = mapped(handle, start + done, size, self.path)
                update_with_tags(fingerprint, view[head:])
                if last and on_fingerprint is not None:
                    on_fingerprint(fingerprint.hexdigest())
                yield view
                del view  # unmapped once the consumer drops it too
                done += size
                head = 0
                if last:
                    return
        finally:
            os.close(handle)

    def fingerprint(self, part: Part) -> str:
        result: list[str] = []
        for _ in self.blocks(part, result.append):
            pass
        return result[0]


class FileHasher:
    """SHA-256 of a whole file in one sequential pass, on its own thread."""

    def __init__(self, source: str, path: str, size: int) -> None:
        self.source, self.path, self.size = source, path, size
        self._cancel = threading.Event()
        self._result: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"sha256 {path}", daemon=True)

    def start(self) -> FileHasher:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._result = sha256_file(self.source, self.path, self.size, self._cancel)
        except BaseException as error:  # handed to the thread that waits for the result
            self._error = error

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        self._cancel.set()
        self._thread.join()


def sha256_file(source: str, path: str, size: int,
                cancel: threading.Event | None = None) -> str:
    digest = hashlib.sha256()
    handle = os.open(source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        for offset in range(0, size, HASH_BLOCK):
            if cancel is not None and cancel.is_set():
                raise EscrowError(f"{path}: hashing cancelled")
            digest.update(mapped(handle, offset, min(HASH_BLOCK, size - offset), path))
        if os.pread(handle, 1, size):
            raise file_changed(path, "grew")
    finally:
        os.close(handle)
    return digest.hexdigest()
