"""Benchmark verification of a many-file deposit by 1 and by 2 worker processes, against its
peer, in one run (issue 17, "Verification in parallel across files and workers").

    .venv/bin/python bench/verify.py [--files 8] [--size 64MiB] [--repeat 3]

Makes --files random files of --size each on /dev/shm, deposits them (`escrow deposit --no-wait`,
local store on /dev/shm, not timed) once per round and mode, and times, in interleaved rounds:
- the peer: `age -d` then `openssl dgst -sha256` of every file, one file after the other, and
  the same two at a time (`xargs -P 2`, the peer's own use of two cores);
- the deposit's per-file verification jobs run by 1 and by 2 worker processes, and (the
  baseline, as before per-file jobs) one job for the whole deposit by 1 process: each process
  builds its escrow, says it is ready, and on "go" runs `run_pending` (the loop of `escrow
  worker`) until no job is left; wall time from "go" until the last one is done (the seal
  included), so interpreter start-up is not counted on either side.
Figures are medians; MB/s is plaintext verified per second of wall time, "per core" is MB per
CPU-second of the processes doing the work. The box may be shared: the load average before and
after each measurement and the spread of the rounds are printed. Nothing fails: this prints
figures. Helpers come from bench/deposit.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deposit import (
    ESCROW,
    MIB,
    broker,
    children_cpu,
    make_random_file,
    parse_size,
    timed,
)


def worker_process() -> None:
    """--worker: one worker process; its figures as one JSON line on stdout."""
    import resource

    from broker.config import load_settings
    from broker.container import build_escrow
    from broker.services.worker import run_pending, worker_name

    escrow = build_escrow(load_settings(os.environ))
    print("ready", flush=True)
    sys.stdin.readline()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    start = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
    jobs = run_pending(escrow, worker_name())
    end = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    escrow.engine.dispose()
    print(json.dumps({"start": start, "end": end, "jobs": jobs,
                      "cpu": usage.ru_utime + usage.ru_stime - cpu0}), flush=True)


def run_workers(env: dict[str, str], count: int) -> tuple[float, float, list[int]]:
    """`count` worker processes started, made ready, then let go at once: (wall seconds from
    the first start to the last end, CPU seconds of all, jobs each ran)."""
    processes = [
        subprocess.Popen([sys.executable, __file__, "--worker"], env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(count)
    ]
    for process in processes:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("a worker did not start")
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    figures = []
    for process in processes:
        out, _ = process.communicate(timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"a worker failed ({process.returncode})")
        figures.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(f["end"] for f in figures) - min(f["start"] for f in figures)
    return wall, sum(f["cpu"] for f in figures), [f["jobs"] for f in figures]


def deposit_state(env: dict[str, str], deposit_id: str) -> str:
    from broker.adapters.db.models import Deposit
    from broker.config import load_settings
    from broker.container import build_escrow

    escrow = build_escrow(load_settings(env))
    try:
        with escrow.uow() as uow:
            deposit = uow.session.get(Deposit, deposit_id)
            return deposit.state if deposit else "missing"
    finally:
        escrow.engine.dispose()


def as_one_job(env: dict[str, str], deposit_id: str) -> None:
    """Replace the deposit's per-file jobs with one job for the whole deposit (as queued
    before per-file jobs): the baseline of one worker checking every file in one go."""
    from sqlalchemy import delete

    from broker.adapters.db.models import Job
    from broker.config import load_settings
    from broker.container import build_escrow

    escrow = build_escrow(load_settings(env))
    try:
        with escrow.uow() as uow:
            uow.session.execute(delete(Job).where(Job.deposit_id == deposit_id))
            uow.session.add(Job(kind="verify", deposit_id=deposit_id, state="queued"))
            uow.commit()
    finally:
        escrow.engine.dispose()


def peer(work: Path, identity: Path, encrypted: list[Path], width: int) -> float:
    """`age -d` then `openssl dgst -sha256` of each file, `width` files at a time."""
    script = (f'age -d -i {identity} -o "$0.out" "$0" && openssl dgst -sha256 "$0.out" '
              '>/dev/null && rm "$0.out"')
    start = time.perf_counter()
    subprocess.run(["xargs", "-P", str(width), "-n", "1", "sh", "-c", script], check=True,
                   input="\n".join(str(p) for p in encrypted), text=True)
    return time.perf_counter() - start


class Figures:
    def __init__(self, label: str) -> None:
        self.label = label
        self.walls: list[float] = []
        self.cpus: list[float] = []
        self.loads: list[str] = []

    def add(self, wall: float, cpu: float, load: str) -> None:
        self.walls.append(wall)
        self.cpus.append(cpu)
        self.loads.append(load)

    @property
    def wall(self) -> float:
        return sorted(self.walls)[len(self.walls) // 2]

    def line(self, total: int) -> str:
        cpu = sorted(self.cpus)[len(self.cpus) // 2]
        return (f"  {self.label:<50} {self.wall:6.3f} s  {total / self.wall / 1e6:6.0f} MB/s  "
                f"CPU {cpu:5.2f} s  {total / cpu / 1e6:5.0f} MB/CPU-s   "
                f"rounds {min(self.walls):.3f}-{max(self.walls):.3f} s")


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def main() -> None:
    if sys.argv[1:] == ["--worker"]:
        worker_process()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--size", type=parse_size, default=parse_size("64MiB"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shm", type=Path, default=Path("/dev/shm"))
    options = parser.parse_args()
    for tool in ("age", "age-keygen", "openssl", "xargs"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing (apt-get install age openssl findutils)")
    work = Path(tempfile.mkdtemp(prefix="escrow-bench-verify-", dir=options.shm))
    try:
        run(options, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(options: argparse.Namespace, work: Path) -> None:
    total = options.files * options.size
    model = work / "model"
    print(f"making {options.files} random files of {options.size / MIB:.0f} MiB in {work}",
          flush=True)
    for n in range(options.files):
        make_random_file(model / f"shard-{n:02d}.bin", options.size)
    identity = work / "peer-key.txt"
    timed(["age-keygen", "-o", str(identity)])
    recipient = next(line.split(": ")[1] for line in identity.read_text().splitlines()
                     if line.startswith("# public key: "))
    encrypted = []
    for plain in sorted(model.iterdir()):
        encrypted.append(work / "peer" / (plain.name + ".age"))
        encrypted[-1].parent.mkdir(exist_ok=True)
        timed(["age", "-r", recipient, "-o", str(encrypted[-1]), str(plain)])

    kinds = {
        "peer1": Figures("peer: age -d, openssl dgst, 1 file at a time"),
        "peer2": Figures("peer: the same, 2 files at a time"),
        "w0": Figures("escrow: 1 worker, one job for all files (before)"),
        "w1": Figures("escrow: 1 worker process"),
        "w2": Figures("escrow: 2 worker processes"),
    }
    split: list[list[int]] = []
    print(f"{options.repeat} interleaved rounds, {total / MIB:.0f} MiB in "
          f"{options.files} files, on {os.cpu_count()} cores (load before/after each):",
          flush=True)
    with broker(work / "broker") as env:
        for i in range(options.repeat):
            for key in kinds:
                before = load()
                if key.startswith("peer"):
                    c0 = children_cpu()
                    seconds = peer(work, identity, encrypted, int(key[-1]))
                    cpu = children_cpu() - c0
                else:
                    _, result = timed([ESCROW, "deposit", str(model), "--model", "bench/model",
                                       "--version", f"{key}-{i}", "--no-wait", "--json",
                                       "--quiet"], env, stdout=subprocess.PIPE)
                    deposit_id = json.loads(result.stdout.strip().splitlines()[-1])["deposit_id"]
                    if key == "w0":
                        as_one_job(env, deposit_id)
                    seconds, cpu, ran = run_workers(env, max(1, int(key[-1])))
                    if (state := deposit_state(env, deposit_id)) != "sealed":
                        raise RuntimeError(f"deposit {deposit_id} is {state}, not sealed")
                    if key == "w2":
                        split.append(ran)
                kinds[key].add(seconds, cpu, f"{before}/{load()}")
                print(f"  round {i + 1} {key:<5} {seconds:6.3f} s  CPU {cpu:5.2f} s  "
                      f"load {before}/{load()}", flush=True)
    print("\nmedians:")
    for figures in kinds.values():
        print(figures.line(total))
    print(f"  files per worker with 2 workers, each round: {split}")
    print("\nratios (peer time / escrow time; higher is better):")
    p1, p2, w0, w1, w2 = (kinds[k].wall for k in ("peer1", "peer2", "w0", "w1", "w2"))
    print(f"  1 job     vs peer 1 at a time   {p1 / w0:5.2f}   (before: one job per deposit)")
    print(f"  1 worker  vs peer 1 at a time   {p1 / w1:5.2f}")
    print(f"  2 workers vs peer 1 at a time   {p1 / w2:5.2f}")
    print(f"  2 workers vs peer 2 at a time   {p2 / w2:5.2f}")
    print(f"  speed-up, 2 workers over 1      {w1 / w2:5.2f}")


if __name__ == "__main__":
    main()
