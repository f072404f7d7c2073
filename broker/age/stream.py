"""The age payload: a 16-byte nonce, then STREAM over ChaCha20-Poly1305 in 64 KiB chunks.

C2SP age, "Payload":

    payload key = HKDF-SHA-256(ikm = file key, salt = nonce, info = "payload")
    chunk nonce = 11-byte big-endian chunk counter || 0x01 for the final chunk, else 0x00

Encryption and decryption run in constant memory over reused buffers (`encrypt_into` /
`decrypt_into`, no per-chunk allocation of the data). `PayloadEncryptor.encrypt_chunks` encrypts
any run of whole chunks given its first counter, so independent parts of one file can be
encrypted on different threads or machines and concatenated.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from broker.age.errors import HeaderError, PayloadError
from broker.age.primitives import TAG_SIZE, hkdf_sha256

CHUNK_SIZE = 64 * 1024
ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
NONCE_SIZE = 16  # the payload nonce at the start of the payload
COUNTER_SIZE = 11
MAX_CHUNKS = 1 << (8 * COUNTER_SIZE)  # counters 0 .. 2**88 - 1
LAST_CHUNK_FLAG = b"\x01"
NOT_LAST_CHUNK_FLAG = b"\x00"
PAYLOAD_KEY_INFO = b"payload"
# Chunks per read/write when streaming: 1 MiB of plaintext per system call, constant memory.
BATCH_CHUNKS = 16

ReadableBuffer = bytes | bytearray | memoryview
WritableBuffer = bytearray | memoryview


class SupportsUpdate(Protocol):
    """A running hash (hashlib object) fed with the plaintext as it passes."""

    def update(self, data: ReadableBuffer, /) -> None: ...


class SupportsWrite(Protocol):
    """Where plaintext goes: a binary file, or anything with its write (a counting sink)."""

    def write(self, data: bytes | memoryview, /) -> int: ...


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    # Why the nonce as HKDF salt: each file gets its own payload key even if a file key were
    # ever reused, and the chunk nonces can then be a plain counter starting at zero.
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"payload nonce is {len(nonce)} bytes, expected {NONCE_SIZE}")
    return hkdf_sha256(file_key, salt=nonce, info=PAYLOAD_KEY_INFO)


def new_payload_nonce() -> bytes:
    """16 bytes from the OS CSPRNG; a new one for every file (spec: MUST)."""
    return os.urandom(NONCE_SIZE)


def chunk_nonce(counter: int, final: bool) -> bytes:
    # Why counter || flag: each chunk position gets a distinct nonce under the one payload key,
    # and the flag authenticates which chunk is the last, so truncation at a chunk boundary and
    # appending after the end are both detected.
    return counter.to_bytes(COUNTER_SIZE, "big") + (
        LAST_CHUNK_FLAG if final else NOT_LAST_CHUNK_FLAG
    )


def chunk_count(plaintext_size: int) -> int:
    """Chunks for a plaintext: at least one (an empty file is one empty final chunk)."""
    return max(1, -(-plaintext_size // CHUNK_SIZE))


def encrypted_payload_size(plaintext_size: int) -> int:
    """Size of the payload (nonce included) for a plaintext of `plaintext_size` bytes."""
    if plaintext_size < 0:
        raise ValueError("plaintext size is negative")
    return NONCE_SIZE + plaintext_size + TAG_SIZE * chunk_count(plaintext_size)


def plaintext_size(payload_size: int) -> int:
    """Plaintext size for a payload (nonce included); PayloadError if no plaintext has it."""
    body = payload_size - NONCE_SIZE
    full, rest = divmod(body, ENCRYPTED_CHUNK_SIZE)
    if body < TAG_SIZE or (0 < rest < TAG_SIZE) or (rest == TAG_SIZE and full > 0):
        raise PayloadError(
            f"age payload: {payload_size} bytes is not a possible payload size",
            hint="the payload is truncated or has extra bytes; fetch it again",
        )
    return full * CHUNK_SIZE + (rest - TAG_SIZE if rest else 0)


def _check_run(size: int, counter: int, final: bool, chunk: int) -> int:
    """Validate a run of chunks; return the number of chunks in it."""
    if not final and (size == 0 or size % chunk):
        raise ValueError("a non-final run must be a non-zero whole number of chunks")
    if final and size == 0 and counter != 0:
        raise ValueError("only an empty file may end with an empty chunk")
    if counter < 0:
        raise ValueError("chunk counter is negative")
    chunks = max(1, -(-size // chunk))
    if counter + chunks > MAX_CHUNKS:
        raise ValueError("chunk counter overflows 11 bytes")
    return chunks


class PayloadEncryptor:
    """Encrypts runs of chunks of one payload. Thread-safe: no mutable state is shared."""

    def __init__(self, file_key: bytes, nonce: bytes) -> None:
        self.nonce = bytes(nonce)
        self._key = payload_key(file_key, self.nonce)

    def encrypt_chunks(
        self, plaintext: ReadableBuffer, out: WritableBuffer, counter: int, *, final: bool
    ) -> int:
        """Encrypt whole chunks starting at chunk `counter` into `out`; return bytes written.

        `plaintext` is a multiple of 64 KiB unless `final`, in which case its last chunk may be
        short (or the whole run empty, for an empty file). `out` needs
        len(plaintext) + 16 per chunk bytes.
        """
        src = memoryview(plaintext).cast("B")
        dst = memoryview(out).cast("B")
        chunks = _check_run(len(src), counter, final, CHUNK_SIZE)
        need = len(src) + TAG_SIZE * chunks
        if len(dst) < need:
            raise ValueError(f"output buffer is {len(dst)} bytes, needs {need}")
        aead = ChaCha20Poly1305(self._key)  # one per call: safe to use from several threads
        pos = 0
        for i in range(chunks):
            piece = src[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
            nonce = chunk_nonce(counter + i, final and i == chunks - 1)
            pos += aead.encrypt_into(nonce, piece, None, dst[pos : pos + len(piece) + TAG_SIZE])
        return pos


class PayloadDecryptor:
    """Decrypts runs of chunks of one payload, e.g. for random access. Thread-safe."""

    def __init__(self, file_key: bytes, nonce: bytes) -> None:
        self.nonce = bytes(nonce)
        self._key = payload_key(file_key, self.nonce)

    def decrypt_chunks(
        self, ciphertext: ReadableBuffer, out: WritableBuffer, counter: int, *, final: bool
    ) -> int:
        """Decrypt whole encrypted chunks starting at `counter`; PayloadError on any bad tag."""
        src = memoryview(ciphertext).cast("B")
        dst = memoryview(out).cast("B")
        chunks = -(-len(src) // ENCRYPTED_CHUNK_SIZE)
        if chunks == 0 or len(src) - (chunks - 1) * ENCRYPTED_CHUNK_SIZE < TAG_SIZE:
            raise PayloadError("age payload: chunk run is truncated")
        _check_run(len(src) - TAG_SIZE * chunks, counter, final, CHUNK_SIZE)
        aead = ChaCha20Poly1305(self._key)
        pos = 0
        for i in range(chunks):
            piece = src[i * ENCRYPTED_CHUNK_SIZE : (i + 1) * ENCRYPTED_CHUNK_SIZE]
            nonce = chunk_nonce(counter + i, final and i == chunks - 1)
            try:
                pos += aead.decrypt_into(nonce, piece, None, dst[pos : pos + len(piece) - TAG_SIZE])
            except InvalidTag:
                raise _chunk_error(counter + i) from None
        return pos


def _chunk_error(counter: int, what: str = "failed to authenticate") -> PayloadError:
    return PayloadError(
        f"age payload: chunk {counter} {what}; the payload is damaged or truncated",
        hint="fetch the file again; data released before this error is a correct prefix only",
    )


def _fill(src: BinaryIO, view: memoryview, filled: int) -> int:
    """Read into view[filled:] until it is full or the stream ends; return the new fill."""
    readinto = getattr(src, "readinto", None)
    while filled < len(view):
        if readinto is not None:
            n = readinto(view[filled:])
        else:
            data = src.read(len(view) - filled)
            n = len(data)
            view[filled : filled + n] = data
        if n is None:
            raise ValueError("non-blocking streams are not supported")
        if n == 0:
            break
        filled += n
    return filled


def encrypt_payload(
    src: BinaryIO,
    dst: BinaryIO,
    file_key: bytes,
    *,
    nonce: bytes | None = None,
    plaintext_hash: SupportsUpdate | None = None,
) -> int:
    """Write the payload (nonce, then chunks) for all of `src`; return the plaintext size."""
    encryptor = PayloadEncryptor(file_key, new_payload_nonce() if nonce is None else nonce)
    batch = BATCH_CHUNKS * CHUNK_SIZE
    # One byte more than a batch: if it fills, data follows, so the batch is not the end.
    buf = bytearray(batch + 1)
    out = bytearray(BATCH_CHUNKS * ENCRYPTED_CHUNK_SIZE)
    view, out_view = memoryview(buf), memoryview(out)
    dst.write(encryptor.nonce)
    counter = total = filled = 0
    while True:
        filled = _fill(src, view, filled)
        final = filled <= batch
        size = filled if final else batch
        n = encryptor.encrypt_chunks(view[:size], out_view, counter, final=final)
        if plaintext_hash is not None:
            plaintext_hash.update(view[:size])
        dst.write(out_view[:n])
        total += size
        if final:
            return total
        counter += BATCH_CHUNKS
        buf[0] = buf[batch]
        filled = 1


# long: the read loop, the final-chunk rules and the release in `finally` share state; one to audit
def decrypt_payload(
    src: BinaryIO,
    dst: SupportsWrite,
    file_key: bytes,
    *,
    plaintext_hash: SupportsUpdate | None = None,
) -> int:
    """Read a payload from `src` (at its nonce) and write the plaintext; return its size.

    Every chunk that authenticates is written, in order, before PayloadError is raised for the
    first one that does not (or for a missing final chunk, or data after it).
    """
    nonce = bytearray(NONCE_SIZE)
    if _fill(src, memoryview(nonce), 0) < NONCE_SIZE:
        raise HeaderError(
            "age header: the payload nonce after the header is missing or truncated",
            hint="the file is truncated; fetch it again",
        )
    aead = ChaCha20Poly1305(payload_key(file_key, bytes(nonce)))
    # One byte more than a batch: a full chunk followed by at least one byte is not the last.
    buf = bytearray(BATCH_CHUNKS * ENCRYPTED_CHUNK_SIZE + 1)
    out = bytearray(BATCH_CHUNKS * CHUNK_SIZE)
    view, out_view = memoryview(buf), memoryview(out)
    counter = total = filled = 0

    def open_chunk(piece: memoryview, at: int, final: bool) -> bool:
        # decrypt_into may leave unauthenticated bytes in `out` on failure; they are never
        # released because `released` only advances after a tag verifies.
        target = out_view[at : at + len(piece) - TAG_SIZE]
        try:
            aead.decrypt_into(chunk_nonce(counter, final), piece, None, target)
        except InvalidTag:
            return False
        return True

    done = False
    while True:
        filled = _fill(src, view, filled)
        eof = filled < len(buf)
        pos = released = 0
        try:
            while filled - pos > ENCRYPTED_CHUNK_SIZE:
                # A full chunk with data after it: must be non-final.
                piece = view[pos : pos + ENCRYPTED_CHUNK_SIZE]
                if open_chunk(piece, released, final=False):
                    released += CHUNK_SIZE
                    pos += ENCRYPTED_CHUNK_SIZE
                    counter += 1
                    continue
                if open_chunk(piece, released, final=True):
                    released += CHUNK_SIZE
                    raise _chunk_error(counter, "is final but data follows it")
                raise _chunk_error(counter)
            if eof:
                rest = filled - pos
                if rest == 0:
                    raise _chunk_error(counter, "is missing (no final chunk)")
                if rest < TAG_SIZE:
                    raise _chunk_error(counter, "is truncated")
                if rest == TAG_SIZE and counter > 0:
                    raise _chunk_error(counter, "is an empty final chunk after other chunks")
                piece = view[pos:filled]
                if open_chunk(piece, released, final=True):
                    released += rest - TAG_SIZE
                    done = True
                elif rest == ENCRYPTED_CHUNK_SIZE and open_chunk(piece, released, final=False):
                    released += CHUNK_SIZE
                    raise _chunk_error(counter + 1, "is missing (no final chunk)")
                else:
                    raise _chunk_error(counter)
        finally:
            # Release what authenticated, also when raising: callers may keep the prefix.
            if released:
                if plaintext_hash is not None:
                    plaintext_hash.update(out_view[:released])
                dst.write(out_view[:released])
                total += released
        if done:
            return total
        # Keep the unprocessed tail (at most one chunk) and read on.
        buf[: filled - pos] = bytes(view[pos:filled])
        filled -= pos
