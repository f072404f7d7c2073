"""Produce one part's ciphertext in blocks, fingerprint it, and hash whole files.

Speed (see PERF-NOTES): each part worker reads its own byte range of the file, encrypts 4 MiB
blocks into a reused buffer and hands them to the socket; the plaintext SHA-256 is computed by a
separate thread reading the file in order (the second read comes from the page cache). Both
ChaCha20-Poly1305 in `cryptography` and `hashlib` release the GIL, so the two run on two cores.
Memory per worker is two 4 MiB buffers, whatever the file or part size.

A part's fingerprint is SHA-256 over its Poly1305 tags, in order. It costs one small hash
update per 64 KiB chunk, and under a fixed key and nonce it changes with any change to the
part's plaintext (a tag is a MAC of the chunk's ciphertext, itself plaintext XOR a keystream
fixed by key and counter), so the resume journal uses it to prove that a part already sent
still matches the file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from broker import age
from broker.domain.parts import CHUNK_SIZE, NONCE_SIZE, TAG_SIZE, Part
from broker.errors import EscrowError

ENCRYPTED_CHUNK = CHUNK_SIZE + TAG_SIZE
BLOCK_CHUNKS = 64  # 4 MiB of plaintext per read, encrypt and send (measured sweet spot)
BLOCK_SIZE = BLOCK_CHUNKS * CHUNK_SIZE
HASH_BLOCK = 4 * 1024 * 1024


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
    """Per-thread reusable buffers: constant memory however many parts a worker handles."""

    def __init__(self) -> None:
        self.plain = bytearray(BLOCK_SIZE)
        self.cipher = bytearray(NONCE_SIZE + BLOCK_CHUNKS * ENCRYPTED_CHUNK)


_buffers = _Buffers()


def _read_exact(handle: int, view: memoryview, offset: int, path: str) -> None:
    got = 0
    while got < len(view):
        n = os.preadv(handle, [view[got:]], offset + got)
        if n == 0:
            raise file_changed(path, "became shorter")
        got += n


@dataclass(frozen=True)
class PlainSource:
    """A plaintext file to encrypt part by part with one key and nonce."""

    source: str  # path to open
    path: str  # deposit path, for messages
    encryptor: age.PayloadEncryptor

    def blocks(self, part: Part, on_fingerprint: Callable[[str], None] | None = None,
               ) -> Iterator[memoryview]:
        """The part's ciphertext in blocks of up to 4 MiB (views of a reused buffer: each is
        valid until the next is asked for). `on_fingerprint` is called with the part's
        fingerprint once its last block is encrypted, before that block is handed out, so a
        part the store can have received in full always has its fingerprint journaled."""
        buffers = _buffers
        plain, cipher = memoryview(buffers.plain), memoryview(buffers.cipher)
        fingerprint = hashlib.sha256()
        handle = os.open(self.source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            done = 0
            while True:
                size = min(BLOCK_SIZE, part.plain_size - done)
                last = done + size >= part.plain_size
                _read_exact(handle, plain[:size], part.plain_offset + done, self.path)
                head = 0
                if part.number == 1 and done == 0:
                    cipher[:NONCE_SIZE] = self.encryptor.nonce
                    head = NONCE_SIZE
                n = self.encryptor.encrypt_chunks(
                    plain[:size], cipher[head:], part.first_chunk + done // CHUNK_SIZE,
                    final=part.is_last and last,
                )
                update_with_tags(fingerprint, cipher[head : head + n])
                done += size
                if last:
                    if part.is_last and os.pread(handle, 1, part.plain_offset + done):
                        raise file_changed(self.path, "grew")
                    if on_fingerprint is not None:
                        on_fingerprint(fingerprint.hexdigest())
                yield cipher[: head + n]
                if last:
                    return
        finally:
            os.close(handle)

    def fingerprint(self, part: Part) -> str:
        """Re-encrypt a part locally (nothing is sent) and return its fingerprint."""
        result: list[str] = []
        for _ in self.blocks(part, result.append):
            pass
        return result[0]


@dataclass(frozen=True)
class CipherSource:
    """An age file made elsewhere (`age -r`): parts are byte ranges of its payload."""

    source: str
    path: str
    payload_offset: int  # the header's length: where the payload nonce starts

    def blocks(self, part: Part, on_fingerprint: Callable[[str], None] | None = None,
               ) -> Iterator[memoryview]:
        cipher = memoryview(_buffers.cipher)
        fingerprint = hashlib.sha256()
        start = self.payload_offset + part_cipher_offset(part)
        total = part.cipher_size
        handle = os.open(self.source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            done = 0
            # Blocks of whole encrypted chunks (after the nonce, in part 1's first block), so
            # the tags sit at fixed places for the fingerprint.
            head = NONCE_SIZE if part.number == 1 else 0
            while True:
                size = min(head + BLOCK_CHUNKS * ENCRYPTED_CHUNK, total - done)
                view = cipher[:size]
                _read_exact(handle, view, start + done, self.path)
                update_with_tags(fingerprint, view[head:])
                done += size
                head = 0
                last = done >= total
                if last and on_fingerprint is not None:
                    on_fingerprint(fingerprint.hexdigest())
                yield view
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
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    total = 0
    with open(source, "rb", buffering=0) as handle:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while True:
            if cancel is not None and cancel.is_set():
                raise EscrowError(f"{path}: hashing cancelled")
            n = handle.readinto(view)
            if not n:
                break
            digest.update(view[:n])
            total += n
            if total > size:
                raise file_changed(path, "grew")
    if total != size:
        raise file_changed(path, f"is {total} bytes, not {size},")
    return digest.hexdigest()
