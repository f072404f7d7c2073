"""Benchmark the audit log on PostgreSQL (issue 17, the two audit figures).

    .venv/bin/python bench/audit.py [--writers 16] [--seconds 5] [--events 100000] [--repeat 3]

Makes a fresh PostgreSQL database (`escrow_bench_<random>` on 127.0.0.1:5432, dropped at the end),
initialises the broker there (local store and key, in a temporary folder) and measures:
(a) appends: --writers processes, each in a closed loop of one unit of work that appends one
    event and commits (as tests/audit/test_concurrent_appends.py), for --seconds; events
    committed per second (goal >= 2,000/s). `--service` runs `admin.create_token` instead, a
    real service (a token's row and its event): on 2 cores its Python (~3 ms CPU per call,
    16 processes) is the limit, not the log;
(b) `escrow audit verify` (the operator's self-check: every entry replayed against its recorded
    hash, the head and the signed checkpoints) on a log of --events entries, timed in process
    (`verify_deployment`) and as the CLI's wall time, and scaled to 10^6 entries (goal <= 10 s
    per 10^6). The log is filled once, before the rounds, with leaves made the way appends make
    them (written in bulk, the tree grown with `extend_tree`), and signed once, so each round
    times the check, not the signing or the mirroring of a new checkpoint.
Rounds interleave (a) and (b); the figures are the medians of --repeat rounds. The writers,
this process and PostgreSQL share the box's cores: their CPU per event is printed beside the
rate. This is a benchmark, not a test: nothing fails, it prints figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deposit import ESCROW
from key_release import bench_database, postgres_cpu

ORG = "acme-ai"
GOAL_APPENDS, GOAL_VERIFY_S = 2000.0, 10.0
FILL_CHUNK = 10_000
WARM_UP = 20  # transactions per writer before the clock starts


def settings_env(base: Path, database_url: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")},
        "ESCROW_DATA_DIR": str(base / "data"),
        "ESCROW_DATABASE_URL": database_url,
        "ESCROW_IN_PROCESS_WORKER": "0",
    }


def prepare(env: dict[str, str]) -> None:
    """`escrow init` in process, and the organisation the writers' tokens belong to."""
    from broker.config import load_settings
    from broker.domain.principals import OPERATOR
    from broker.services import admin
    from broker.services.setup import initialise

    escrow, _ = initialise(load_settings(env))
    with escrow.uow() as uow:
        admin.create_org(uow, OPERATOR, ORG)
    escrow.engine.dispose()


# --- (a) appends -------------------------------------------------------------------------------


def writer(env: dict[str, str], service: bool, ready: Any, go: Any, stop_at: Any,
           results: Any) -> None:
    """One writer process: once `go` is set, create tokens until `stop_at`; report
    (count, CPU s)."""
    from broker.config import load_settings
    from broker.container import build_escrow
    from broker.domain.principals import OPERATOR
    from broker.services import admin

    escrow = build_escrow(load_settings(env))
    def once(number: int) -> None:
        with escrow.uow() as uow:
            if service:
                admin.create_token(uow, OPERATOR, ORG, "depositor", days=1, label="bench")
            else:
                uow.audit("bench.append", OPERATOR, {"org": ORG}, {"n": number})
                uow.commit()

    for number in range(WARM_UP):  # import, connect and compile the statements before the clock
        once(number)
    ready.put(os.getpid())
    go.wait()
    cpu0, count = _self_cpu(), 0
    while time.time() < stop_at.value:
        once(count)
        count += 1
    results.put((count, _self_cpu() - cpu0))
    escrow.engine.dispose()


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def appends(env: dict[str, str], writers: int, seconds: float, service: bool
            ) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    stop_at = context.Value("d", 0.0)
    processes = [context.Process(target=writer, args=(env, service, ready, go, stop_at, results))
                 for _ in range(writers)]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    pg0 = postgres_cpu()
    stop_at.value = time.time() + seconds
    go.set()
    time.sleep(max(0.0, stop_at.value - time.time()))
    pg = postgres_cpu() - pg0
    counted = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join()
    events = sum(count for count, _ in counted)
    return {
        "rate": events / seconds,
        "events": events,
        "writers_cpu_ms": 1000 * sum(cpu for _, cpu in counted) / max(events, 1),
        "postgres_cpu_ms": 1000 * pg / max(events, 1),
    }


# --- (b) verification --------------------------------------------------------------------------


def fill(env: dict[str, str], events: int) -> int:
    """Grow the log to `events` entries, leaves made as `UnitOfWork.audit` makes them."""
    from sqlalchemy import insert

    from broker.adapters.db.models import AuditEvent
    from broker.auditlog.leaf import canonical_json, leaf_hash
    from broker.config import load_settings
    from broker.container import build_escrow
    from broker.services import audit

    escrow = build_escrow(load_settings(env))
    with escrow.uow() as uow:
        size, _ = audit.head(uow)
    while size < events:
        count = min(FILL_CHUNK, events - size)
        now = datetime.now(UTC)
        rows = []
        for seq in range(size, size + count):
            leaf = canonical_json({
                "seq": seq, "time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "action": "token.created", "actor": {"kind": "operator", "id": "console"},
                "subject": {"org": ORG, "token": f"esk_{seq:012d}"},
                "details": {"role": "depositor", "label": "bench"},
            })
            rows.append({"seq": seq, "leaf": leaf, "leaf_hash": leaf_hash(leaf),
                         "action": "token.created", "created_at": now, "org": ORG,
                         "model": None, "user_id": None, "actor": "operator:console"})
        with escrow.uow() as uow:
            subtrees = uow.extend_tree([row["leaf_hash"] for row in rows])
            for row, nodes in zip(rows, subtrees, strict=True):
                row["subtrees"] = nodes
            uow.rows(insert(AuditEvent), rows)
            uow.commit()
        size += count
    with escrow.uow() as uow:
        audit.sign_checkpoint(escrow, uow)  # once, untimed: the rounds time the check
    escrow.engine.dispose()
    return size


def verify_in_process(env: dict[str, str]) -> tuple[float, int]:
    from broker.config import load_settings
    from broker.container import build_escrow
    from broker.services.audit import verify_deployment

    escrow = build_escrow(load_settings(env))
    start = time.perf_counter()
    result = verify_deployment(escrow)
    elapsed = time.perf_counter() - start
    escrow.engine.dispose()
    return elapsed, result["size"]


def verify_cli(env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([ESCROW, "audit", "verify"], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


# --- the run -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", type=int, default=16, help="appending processes")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each append run")
    parser.add_argument("--events", type=int, default=100_000, help="entries of the verified log")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    parser.add_argument("--service", action="store_true",
                        help="writers call admin.create_token instead of a bare append")
    parser.add_argument("--shm", default="/dev/shm")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="escrow-bench-audit-", dir=options.shm))
    try:
        run(options, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(options: argparse.Namespace, work: Path) -> None:
    import broker

    with bench_database() as database_url:
        env = settings_env(work, database_url)
        prepare(env)
        print(f"broker from {Path(broker.__file__).parent}, PostgreSQL database "
              f"{database_url.rsplit('/', 1)[1]}, {os.cpu_count()} cores shared by writers, "
              "bench and PostgreSQL", flush=True)
        started = time.perf_counter()
        with bench_database() as verify_url:  # its own log, untouched by the appends
            verify_env = settings_env(work / "verify", verify_url)
            prepare(verify_env)
            size = fill(verify_env, options.events)
            print(f"filled a log of {size} entries in {time.perf_counter() - started:.1f} s",
                  flush=True)
            verify_in_process(verify_env)  # warm-up (page cache, plans)
            rates, verifies, clis = [], [], []
            for number in range(1, options.repeat + 1):
                result = appends(env, options.writers, options.seconds, options.service)
                rates.append(result["rate"])
                elapsed, checked = verify_in_process(verify_env)
                assert checked == size, (checked, size)
                verifies.append(elapsed)
                clis.append(verify_cli(verify_env))
                print(f"  round {number}: appends {result['rate']:6.0f}/s ({result['events']:.0f}"
                      f" events; CPU ms per event: writers {result['writers_cpu_ms']:.2f}, "
                      f"PostgreSQL {result['postgres_cpu_ms']:.2f}); verify {size} entries "
                      f"{elapsed:.2f} s in process, {clis[-1]:.2f} s CLI", flush=True)
    rate = statistics.median(rates)
    scale = 1_000_000 / size
    verify_s, cli_s = statistics.median(verifies) * scale, statistics.median(clis)
    print(f"\nagainst the goals (issue 17), median of {options.repeat} round(s):")
    print(f"  audit appends, {options.writers} writers, one event per transaction "
          f"{rate:7.0f}/s   goal >= {GOAL_APPENDS:.0f}/s   ratio {rate / GOAL_APPENDS:.2f}"
          f"  (runs: {', '.join(f'{r:.0f}' for r in rates)})")
    print(f"  escrow audit verify, per 10^6 entries (in process)        {verify_s:6.1f} s"
          f"    goal <= {GOAL_VERIFY_S:.0f} s   ratio goal/time {GOAL_VERIFY_S / verify_s:.2f}"
          f"  (runs at {size}: {', '.join(f'{v:.2f}' for v in verifies)} s)")
    print(f"  escrow audit verify, CLI wall at {size} entries               {cli_s:6.2f} s"
          f"    (runs: {', '.join(f'{v:.2f}' for v in clis)} s; includes the CLI's start)")

if __name__ == "__main__":
    main()
