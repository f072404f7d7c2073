"""Benchmark `escrow recover` against `escrow verify` of the same deposits (see issue 7, "Speed").

    .venv/bin/python bench/recover.py [--deposits 4] [--size 64MiB] [--repeat 3]

Deposits N random files as N sealed deposits through a real broker (local store on /dev/shm,
SQLite), signs a checkpoint (which mirrors the audit log to the bucket), stops the broker, then
times, in the same run: `escrow verify <id>` of every deposit (the peer: decrypt + hash; also the
same verifications in one process, without N start-ups), and
`escrow recover` into a new empty database (read and check the bucket, write the database, then
verify every deposit). The ratio recover / verify shows recovery's own overhead next to the
verification it must do anyway (1.0 would be no overhead). Nothing fails: this prints figures.
Helpers come from bench/deposit.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deposit import (
    ESCROW,
    MIB,
    broker,
    escrow_deposit,
    make_random_file,
    median,
    parse_size,
    timed,
    verify_in_process,
)


def deposit_all(env: dict[str, str], work: Path, count: int, size: int) -> list[str]:
    ids = []
    for number in range(count):
        model = work / f"model-{number}"
        make_random_file(model / "weights.bin", size)
        _, _, result = escrow_deposit(env, model, f"v{number}", None)
        verify_in_process(env, result["deposit_id"])  # what the worker does: check, then seal
        ids.append(result["deposit_id"])
    return ids


def checkpoint(env: dict[str, str]) -> None:
    from broker.config import load_settings
    from broker.container import build_escrow
    from broker.services import audit

    escrow = build_escrow(load_settings(env))
    with escrow.uow() as uow:
        audit.sign_checkpoint(escrow, uow)
    escrow.engine.dispose()


def run(options: argparse.Namespace, work: Path) -> None:
    size = parse_size(options.size)
    with broker(work / "broker") as env:
        ids = deposit_all(env, work, options.deposits, size)
        checkpoint(env)
    database = Path(env["ESCROW_DATA_DIR"]) / "escrow.db"
    verify_s, in_process_s, recover_s = [], [], []
    for _ in range(options.repeat):
        verify_s.append(sum(timed([ESCROW, "verify", d], env)[0] for d in ids))
        in_process_s.append(sum(verify_in_process(env, d) for d in ids))
        shutil.copy(database, work / "saved.db")
        database.unlink()
        timed([ESCROW, "init"], env)
        seconds, result = timed([ESCROW, "recover", "--json"], env, stdout=subprocess.PIPE)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        if not report["ok"] or len(report["deposits"]) != len(ids):
            raise RuntimeError(f"recovery failed: {result.stderr}")
        recover_s.append(seconds)
        shutil.copy(work / "saved.db", database)
    total = len(ids) * size
    print(f"{len(ids)} deposits of {size / MIB:.0f} MiB ({total / MIB:.0f} MiB), "
          f"medians of {options.repeat}:")
    print(f"  escrow verify, every deposit (one command each)  {median(verify_s):7.2f} s")
    print(f"  the same verifications in one process            {median(in_process_s):7.2f} s")
    print(f"  escrow recover (one command, all of it)          {median(recover_s):7.2f} s")
    print(f"  ratio recover / escrow verify: {median(recover_s) / median(verify_s):.2f}; "
          f"recover / in-process verification: {median(recover_s) / median(in_process_s):.2f} "
          "(1.0 = recovery costs nothing beyond verifying; it includes one start-up)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deposits", type=int, default=4)
    parser.add_argument("--size", default="64MiB", help="size of each deposit's one file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shm", default="/dev/shm")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="escrow-bench-recover-", dir=options.shm))
    try:
        run(options, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
