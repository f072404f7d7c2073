"""One file of a rekey: the old payload decrypted and encrypted again under a new file key, as
a stream the store reads like any upload (`put_stream`).

Memory: one batch of chunks (1 MiB) of plaintext at a time, never on disk; the plaintext's
size and SHA-256 are taken on the way, so a payload that does not decrypt to what was deposited
is never switched to.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import BinaryIO

from broker.age.errors import PayloadError
from broker.age.stream import (
    BATCH_CHUNKS,
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    NONCE_SIZE,
    PayloadDecryptor,
    PayloadEncryptor,
    chunk_count,
    new_payload_nonce,
)
from broker.services.verification import Cancelled


class Reencrypting(io.RawIOBase):
    """Reads as the new payload (nonce, then chunks) of a plaintext of `size` bytes whose old
    payload is `source` (at its nonce)."""

    def __init__(
        self, source: BinaryIO, old_key: bytes, new_key: bytes, size: int,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__()
        self.source, self.size, self.cancelled = source, size, cancelled
        self.old_key = old_key
        self.encryptor = PayloadEncryptor(new_key, new_payload_nonce())
        self.decryptor: PayloadDecryptor | None = None
        self.sha256 = hashlib.sha256()
        self.chunks, self.counter = chunk_count(size), 0
        self.pending = memoryview(self.encryptor.nonce)  # bytes made, not yet read
        # One batch's buffers, reused: a batch is read out (`pending`) before the next is made.
        self._sealed = bytearray(BATCH_CHUNKS * ENCRYPTED_CHUNK_SIZE)
        self._plain = bytearray(BATCH_CHUNKS * CHUNK_SIZE)
        self._out = bytearray(BATCH_CHUNKS * ENCRYPTED_CHUNK_SIZE)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.pending and self.counter < self.chunks:
            self.pending = memoryview(self._next_batch())
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def _next_batch(self) -> memoryview:
        if self.cancelled():
            raise Cancelled(f"rekey stopped after {self.counter} chunk(s) of a file")
        if self.decryptor is None:
            nonce = memoryview(bytearray(NONCE_SIZE))
            self.decryptor = PayloadDecryptor(self.old_key, bytes(self._read_into(nonce)))
        count = min(BATCH_CHUNKS, self.chunks - self.counter)
        final = self.counter + count == self.chunks
        plain_len = (count * CHUNK_SIZE) if not final else self.size - self.counter * CHUNK_SIZE
        sealed_len = plain_len + count * (ENCRYPTED_CHUNK_SIZE - CHUNK_SIZE)
        sealed = self._read_into(memoryview(self._sealed)[:sealed_len])
        plain = memoryview(self._plain)[:plain_len]
        self.decryptor.decrypt_chunks(sealed, plain, self.counter, final=final)
        if final and self.source.read(1):
            raise PayloadError("age payload: data after the final chunk")
        self.sha256.update(plain)
        written = self.encryptor.encrypt_chunks(plain, self._out, self.counter, final=final)
        self.counter += count
        return memoryview(self._out)[:written]

    def _read_into(self, view: memoryview) -> memoryview:
        """Fill `view` from the old payload; PayloadError if it ends first."""
        filled = 0
        while filled < len(view):
            piece = self.source.read(len(view) - filled)
            if not piece:
                raise PayloadError(
                    f"age payload: truncated ({filled} of {len(view)} bytes of a chunk run)"
                )
            view[filled : filled + len(piece)] = piece
            filled += len(piece)
        return view
