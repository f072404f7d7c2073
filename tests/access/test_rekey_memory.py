"""Rekey streams: re-encrypting a version whose file is far larger than any buffer takes memory
of the order of its buffers (a batch of chunks, a store block), not of the file. Measured with
tracemalloc around the worker's run of the rekey job, in process, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc

from broker.adapters.db.models import Deposit
from broker.domain.principals import OPERATOR
from broker.services import rekey, worker
from broker.services.deposits import deposit_prefix, payload_key

MIB = 1024 * 1024
SIZE = 48 * MIB
SMALL = 8 * MIB  # larger than every buffer of the rekey


def peak_of(action) -> tuple[int, object]:
    """The peak of Python's allocations (bytes above what was allocated before) while
    `action` runs, and what it returned."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before, result


def rekeyed(escrow, version: str) -> tuple[int, dict]:
    """Rekey acme-ai/gpt-small@VERSION through the worker: the peak of its run, and its state."""
    with escrow.uow() as uow:
        rekey.request_rekey(escrow, uow, OPERATOR, "acme-ai/gpt-small", version, "leak 48")
    peak, ran = peak_of(lambda: worker.run_pending(escrow))
    assert ran == 1
    with escrow.uow() as uow:
        return peak, rekey.show(uow, OPERATOR, "acme-ai/gpt-small", version)


def test_a_rekey_of_a_large_file_takes_memory_far_below_its_size(escrow, lab):
    big = os.urandom(SIZE)
    digest = hashlib.sha256(big).hexdigest()
    deposit_id = lab.deposit({"big.bin": big})["deposit_id"]
    lab.deposit({"small.bin": big[:SMALL]}, version="2024-06")
    del big

    small_peak, small = rekeyed(escrow, "2024-06")
    started = time.monotonic()
    peak, shown = rekeyed(escrow, "2024-05")
    took = time.monotonic() - started
    assert small["state"] == "done" and shown["state"] == "done", (small, shown)
    with escrow.uow() as uow:
        deposit = uow.session.get(Deposit, deposit_id)
        assert deposit.generation == 1 and deposit.files[0].sha256 == digest
    print(f"rekey peaks (Python allocations): {SMALL // MIB} MiB file {small_peak / MIB:.1f} "
          f"MiB, {SIZE // MIB} MiB file {peak / MIB:.1f} MiB in {took:.1f} s")
    # constant: six times the file, the same memory (its buffers: a store block of 4 MiB to
    # write, one to read, a batch of 1 MiB of chunks and its copies), far below the file
    assert peak < small_peak + 2 * MIB, (peak, small_peak)
    assert peak < SIZE // 3, f"the rekey's peak was {peak / MIB:.1f} MiB for a 48 MiB file"

    # the measure sees a whole file read into memory: reading the new payload at once peaks
    # above the file's size (so the bounds above catch a rekey that did that)
    whole, data = peak_of(lambda: escrow.store.get_bytes(
        deposit_prefix(deposit_id) + payload_key(0, 1)))
    assert len(data) > SIZE and whole >= SIZE
