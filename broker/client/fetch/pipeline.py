"""The block pipeline: a payload cut into blocks of whole encrypted chunks, fetched in parallel into
a fixed pool of buffers, decrypted, and consumed in order."""

from __future__ import annotations

import contextlib
import queue
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from broker import age
from broker.age.stream import ENCRYPTED_CHUNK_SIZE, chunk_count
from broker.client.fetch.common import (
    CHUNK,
    NONCE,
    FileIntegrityError,
    ManifestFile,
)
from broker.client.fetch.ranged import RangeReader
from broker.client.fetch.release import Release


class Slots:
    """The fixed pool of block buffers every file shares: constant memory."""

    def __init__(self, count: int, block_chunks: int) -> None:
        self.free: queue.Queue[tuple[bytearray, bytearray]] = queue.Queue()
        for _ in range(count):
            self.free.put(
                (bytearray(block_chunks * ENCRYPTED_CHUNK_SIZE), bytearray(block_chunks * CHUNK))
            )

    def take(self, block: bool) -> tuple[bytearray, bytearray] | None:
        try:
            return self.free.get(block=block)
        except queue.Empty:
            return None

    def give(self, slot: tuple[bytearray, bytearray]) -> None:
        self.free.put(slot)


class BlockPipeline:
    """Blocks of one fetch: `slots` shared by every file, ranged GETs on the `blocks` executor."""

    def __init__(
        self,
        reader: RangeReader,
        slots: Slots,
        blocks: ThreadPoolExecutor,
        block_chunks: int,
        after_block: Callable[[str, int], None] | None = None,
    ) -> None:
        self.reader, self.slots, self.blocks = reader, slots, blocks
        self.block_chunks = block_chunks
        # Test hook: called as after_block(path, block_number) after each block is written.
        self.after_block = after_block

    def transfer(
        self,
        mf: ManifestFile,
        release: Release,
        key: bytes | None,
        start_chunk: int,
        handle: BinaryIO,
        hasher: Any,
        *,
        write_plain: bool,
    ) -> int:
        """Download chunks [start_chunk, end) of the payload, in blocks fetched in parallel,
        consumed in order: written (plaintext or, for .age files, ciphertext) and hashed."""
        nonce = bytearray(NONCE)
        total = self.reader.read_into(release, 0, memoryview(nonce))
        if total not in (-1, mf.payload_size):
            raise FileIntegrityError(
                mf.path,
                f"the stored payload is {total} bytes, a "
                f"{mf.size}-byte file makes {mf.payload_size}",
            )
        if not write_plain and start_chunk == 0:
            handle.write(nonce)
        decryptor = age.PayloadDecryptor(key, bytes(nonce)) if key is not None else None
        chunks = chunk_count(mf.size)
        blocks = [
            (c, min(c + self.block_chunks, chunks))
            for c in range(start_chunk, chunks, self.block_chunks)
        ]

        def fetch(first: int, end: int, slot: tuple[bytearray, bytearray]) -> tuple[int, int]:
            return self._fetch_block(mf, release, decryptor, first, end, chunks, slot)

        # The plaintext is hashed on a thread of its own while the block is written: both let go
        # of the GIL, so the file's serial path costs the slower of the two, not their sum.
        with ThreadPoolExecutor(1, thread_name_prefix="hash") as hashing:

            def consume(size: int, written: int, slot: tuple[bytearray, bytearray]) -> None:
                hashed = None
                if hasher is not None:
                    hashed = hashing.submit(hasher.update, memoryview(slot[1])[:written])
                try:
                    if write_plain:
                        handle.write(memoryview(slot[1])[:written])
                    else:
                        handle.write(memoryview(slot[0])[:size])
                finally:
                    if hashed is not None:
                        hashed.result()  # the slot is reused once this returns

            return NONCE + self._in_order(mf.path, blocks, fetch, consume)

    def _in_order(
        self,
        path: str,
        blocks: list[tuple[int, int]],
        fetch: Callable[[int, int, tuple[bytearray, bytearray]], tuple[int, int]],
        consume: Callable[[int, int, tuple[bytearray, bytearray]], None],
    ) -> int:
        """Fetch `blocks` in parallel as slots allow, consume them in order; the bytes read."""
        downloaded = 0
        pending: deque[tuple[Future[tuple[int, int]], tuple[bytearray, bytearray]]] = deque()
        position = 0
        try:
            while position < len(blocks) or pending:
                # Submit while slots are free; block for one only when nothing is in flight
                # (a file holding slots must consume before waiting, or files could deadlock).
                while position < len(blocks):
                    slot = self.slots.take(block=not pending)
                    if slot is None:
                        break
                    first, end = blocks[position]
                    pending.append((self.blocks.submit(fetch, first, end, slot), slot))
                    position += 1
                future, slot = pending.popleft()
                try:
                    size, written = future.result()
                    downloaded += size
                    consume(size, written, slot)
                finally:
                    self.slots.give(slot)
                if self.after_block is not None:
                    self.after_block(path, position - len(pending))
        finally:
            for future, slot in pending:
                future.cancel()
                with contextlib.suppress(BaseException):
                    future.result()
                self.slots.give(slot)
        return downloaded

    def _fetch_block(
        self,
        mf: ManifestFile,
        release: Release,
        decryptor: age.PayloadDecryptor | None,
        first: int,
        end: int,
        chunks: int,
        slot: tuple[bytearray, bytearray],
    ) -> tuple[int, int]:
        """One block, chunks [first, end): (ciphertext bytes read, plaintext bytes written)."""
        cipher, plain = slot
        start = NONCE + first * ENCRYPTED_CHUNK_SIZE
        size = min(NONCE + end * ENCRYPTED_CHUNK_SIZE, mf.payload_size) - start
        view = memoryview(cipher)[:size]
        self.reader.read_into(release, start, view)
        written = 0
        if decryptor is not None:
            written = decryptor.decrypt_chunks(view, plain, first, final=end == chunks)
        return size, written
