"""Benchmark `escrow deposit` against its peers, in one run (see issue 2, "Speed and memory").

    .venv/bin/python bench/deposit.py [--size 1GiB] [--repeat 3] [--jobs N] [--skip-s3]

Makes a random file on /dev/shm and times, in the same run:
- the peer: `age -r R -o peer.age FILE`, then `openssl dgst -sha256 FILE`;
- `escrow deposit --no-wait` to a broker on the local store (objects on /dev/shm), up to
  "all payloads stored" (the CLI's wall time, and its own upload phase without interpreter
  start-up), with its peak RSS from `/usr/bin/time -v`;
- the verification of that deposit (decrypt + SHA-256 of every payload, in process) against
  `age -d` then `openssl dgst -sha256`;
- `escrow deposit` to an S3 server (moto in server mode, and bench/discard_s3.py, which throws
  the bytes away) against plain boto3 `upload_file` of the same file to the same server with the
  same part size (64 MiB) and threads, with botocore's default checksums and without them
  (bench/boto3_upload.py). The peer runs twice: in this process, timed from the transfer's start
  (the peer of the CLI's upload phase), and as a process of its own timed from outside, start-up
  and imports included (the peer of the CLI's wall time, which includes the CLI's start-up).
  Like escrow's presigned parts, boto3 with checksums off sends no checksum; moto then computes
  a whole-object CRC at completion (it copies the object into one growing buffer first), several
  CPU-seconds per GiB on the same 2 cores, which boto3's default per-part CRC32 avoids: against
  moto, checksums off is the like-for-like peer. Each run's objects are deleted after it (on the
  local store and on moto, whose spooled files go to /dev/shm).
Both sides write into memory the same way: the peer's output replaces the last round's
(`-o peer.age`), and so each round's deposit payload is removed once it was verified. On some
virtual machines a tmpfs write into never-used memory costs 3-4 times the CPU of one into memory
freed a moment ago (`age -r` to a new name each time: ~3.5 s of kernel time per GiB, to the same
name ~0.9 s), so payloads that pile up against a peer that overwrites would time the host.
Medians of --repeat runs; ratios are peer time / our time (higher is better, goal >= 1.0,
S3 >= 0.9). This is a benchmark, not a test: nothing fails, it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3_upload  # bench/boto3_upload.py, beside this file

from broker.cli.serving import wait_until_serving

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ESCROW = str(BIN / "escrow")
MIB = 1024 * 1024
PART_SIZE = 64 * MIB
BUCKET = "escrow-bench"


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"size {text!r}: use e.g. 1GiB, 512MiB, 4G")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(float(match[1]) * scale[match[2].upper()])


def make_random_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size == size:
        return
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(left, 64 * MIB)
            out.write(os.urandom(n))
            left -= n


def timed(command: list[str], env: dict[str, str] | None = None,
          stdout: Any = subprocess.DEVNULL) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} … failed ({result.returncode}):\n"
                           f"{result.stderr[-3000:]}")
    return elapsed, result


def children_cpu() -> float:
    """User + system CPU seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def group_cpu(pgid: int) -> float:
    """CPU seconds used so far by the live processes of a process group (a server)."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def time_v(command: list[str], env: dict[str, str]) -> tuple[float, int, dict[str, Any]]:
    """Run under /usr/bin/time -v: (wall seconds, peak RSS bytes, last JSON line of stdout)."""
    elapsed, result = timed(["/usr/bin/time", "-v", *command], env, stdout=subprocess.PIPE)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return elapsed, int(rss[1]) * 1024 if rss else 0, out


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def broker(base: Path, extra_env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """`escrow serve` on its own data dir (objects on /dev/shm), no verification worker (the
    bench times verification itself); yields the lab's environment."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    compile_as_installed()
    env = {
        **{k: v for k, v in os.environ.items()
           if not k.startswith("ESCROW_") and k != "PYTHONDONTWRITEBYTECODE"},
        "ESCROW_DATA_DIR": str(base / "data"),
        "ESCROW_PUBLIC_URL": url,
        "ESCROW_CONFIG_DIR": str(base / "lab"),
        "ESCROW_BROKER": url,
        "ESCROW_IN_PROCESS_WORKER": "0",
        **(extra_env or {}),
    }
    run = lambda *a: timed([ESCROW, *a], env, stdout=subprocess.PIPE)[1]  # noqa: E731
    run("init")
    run("admin", "org", "create", "bench")
    token = json.loads(run("admin", "token", "create", "--org", "bench", "--role", "depositor",
                           "--json").stdout.strip().splitlines()[-1])["token"]
    log = (base / "broker.log").open("wb")
    process = subprocess.Popen(
        [ESCROW, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-in-process-worker"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        if not wait_until_serving(url, process):
            raise RuntimeError(f"broker did not start: see {base / 'broker.log'}")
        yield {**env, "ESCROW_TOKEN": token, "BENCH_BROKER_PGID": str(process.pid)}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def compile_as_installed() -> None:
    """Byte-compile the broker package, as `pip install` does: with PYTHONDONTWRITEBYTECODE
    set (as on the development box) every CLI run compiled ~100 modules afresh, ~75 ms of each
    start-up that an installed escrow does not pay."""
    import compileall

    import broker

    compileall.compile_dir(Path(broker.__file__).parent, quiet=1)


def median(values: list[float]) -> float:
    return statistics.median(values)


def gbps(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e9:6.3f} GB/s"


class Measure:
    """Wall and CPU seconds of one kind of run, over the rounds; printed as medians."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.walls: list[float] = []
        self.cpus: dict[str, list[float]] = {}

    def add(self, wall: float, **cpu: float) -> None:
        self.walls.append(wall)
        for name, seconds in cpu.items():
            self.cpus.setdefault(name, []).append(seconds)

    @property
    def wall(self) -> float:
        return median(self.walls)

    def line(self, size: int) -> str:
        cpu = ", ".join(f"{k} {median(v):.2f}" for k, v in self.cpus.items())
        return (f"  {self.label:<50} {self.wall:7.3f} s  {gbps(size, self.wall)}"
                + (f"   CPU-s: {cpu}" if cpu else ""))


# --- the pieces ------------------------------------------------------------------------------


def peer_encrypt(work: Path, plain: Path, recipient: str) -> float:
    out = work / "peer.age"
    t1, _ = timed(["age", "-r", recipient, "-o", str(out), str(plain)])
    t2, _ = timed(["openssl", "dgst", "-sha256", str(plain)])
    return t1 + t2


def peer_decrypt(work: Path, identity_file: Path) -> float:
    out = work / "peer.out"
    t1, _ = timed(["age", "-d", "-i", str(identity_file), "-o", str(out), str(work / "peer.age")])
    t2, _ = timed(["openssl", "dgst", "-sha256", str(out)])
    out.unlink()
    return t1 + t2


def escrow_deposit(env: dict[str, str], model_dir: Path, version: str, jobs: int | None,
                   ) -> tuple[float, int, dict[str, Any]]:
    command = [ESCROW, "deposit", str(model_dir), "--model", "bench/model", "--version",
               version, "--no-wait", "--json", "--quiet"]
    if jobs:
        command += ["--jobs", str(jobs)]
    return time_v(command, env)


def verify_in_process(env: dict[str, str], deposit_id: str) -> float:
    from broker.config import load_settings
    from broker.container import build_escrow
    from broker.domain.principals import OPERATOR
    from broker.services.verification import run_verification

    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})  # for boto3
    escrow = build_escrow(load_settings(env))
    start = time.perf_counter()
    report = run_verification(escrow, deposit_id, OPERATOR)
    elapsed = time.perf_counter() - start
    if not report.ok:
        raise RuntimeError(f"verification failed: {report}")
    escrow.engine.dispose()
    return elapsed


def drop_payloads(env: dict[str, str], deposit_id: str) -> None:
    """Remove a verified deposit's payload objects from the local store (see the docstring)."""
    files = Path(env["ESCROW_DATA_DIR"]) / "objects" / "deposits" / deposit_id / "files"
    payloads = list(files.glob("*.payload"))
    if not payloads:
        raise RuntimeError(f"no payloads under {files}: the store's layout changed")
    for payload in payloads:
        payload.unlink()


def drop_objects(endpoint: str, prefix: str) -> None:
    """Delete what one run left on a storing S3 server (moto), as `drop_payloads` does on the
    local store: each run then writes into memory freed by the last one, both sides alike."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    if not listed:
        raise RuntimeError(f"nothing under {prefix!r} on {endpoint}: the layout changed")
    for found in listed:
        s3.delete_object(Bucket=BUCKET, Key=found["Key"])


def boto3_process(endpoint: str, plain: Path, jobs: int, checksums: bool) -> float:
    """bench/boto3_upload.py as a process of its own, timed from outside like the CLI."""
    seconds, _ = timed([sys.executable, str(ROOT / "bench" / "boto3_upload.py"), endpoint,
                        str(plain), BUCKET, str(jobs), "1" if checksums else "0"])
    return seconds


@contextmanager
def moto(work: Path) -> Iterator[tuple[str, int]]:
    sys.path.insert(0, str(ROOT / "tests"))
    import servers  # tests/servers.py: moto in server mode on a free port

    command = servers.moto_server_command()
    if command is None:
        raise RuntimeError("moto[server] is not installed in this venv")
    # moto keeps each object in a spooled temporary file: on /dev/shm like the local store's
    # objects, not on this box's disk, whose writeback would time the host
    tmp = work / "moto-tmp"
    tmp.mkdir()
    with servers.moto_server(work / "moto", command, {"TMPDIR": str(tmp)}) as endpoint:
        import boto3

        boto3.client("s3", endpoint_url=endpoint.url, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing",
                     ).create_bucket(Bucket=BUCKET)
        yield endpoint.url, moto_pid(endpoint.url)


def moto_pid(url: str) -> int:
    """The pid of the moto server listening on url's port (to account its CPU)."""
    port = int(url.rsplit(":", 1)[1])
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # LISTEN
            inodes.add(fields[9])
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                for fd in os.scandir(f"/proc/{entry.name}/fd"):
                    if os.readlink(fd.path).strip("socket:[]") in inodes:
                        return os.getpgid(int(entry.name))
            except OSError:
                continue
    return 0


@contextmanager
def discard_s3(work: Path) -> Iterator[tuple[str, int]]:
    """bench/discard_s3.py: an S3 endpoint that throws part bodies away."""
    log = (work / "discard-s3.log").open("w+")
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "discard_s3.py")],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not (text := (work / "discard-s3.log").read_text()).startswith("listening"):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"discard S3 server did not start: {text}")
            time.sleep(0.05)
        url = text.split()[-1]
        import boto3

        boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing",
                     ).create_bucket(Bucket=BUCKET)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    parser.add_argument("--repeat", type=int, default=3, help="runs per local measurement")
    parser.add_argument("--s3-repeat", type=int, default=1, help="runs per S3 measurement")
    parser.add_argument("--jobs", type=int, default=None, help="escrow deposit --jobs")
    parser.add_argument("--s3-jobs", type=int, default=4, help="threads for S3, both sides")
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--s3-server", choices=("moto", "discard", "both"), default="both",
                        help="moto (what the issue names) and/or bench/discard_s3.py")
    parser.add_argument("--shm", type=Path, default=Path("/dev/shm"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    options = parser.parse_args()
    for tool in ("age", "age-keygen", "openssl", "/usr/bin/time"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing (apt-get install age openssl time)")

    size = options.size
    work = Path(tempfile.mkdtemp(prefix="escrow-bench-", dir=options.shm))
    try:
        run(options, size, work)
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(options: argparse.Namespace, size: int, work: Path) -> None:
    model = work / "model"
    plain = model / "weights.bin"
    print(f"making a {size / MIB:.0f} MiB random file in {work}", flush=True)
    make_random_file(plain, size)
    identity = work / "peer-key.txt"
    timed(["age-keygen", "-o", str(identity)])
    recipient = re.search(r"public key: (age1\w+)",
                          identity.read_text())[1]  # type: ignore[index]
    n = options.repeat
    peer = Measure("peer: age -r, then openssl dgst -sha256")
    wall = Measure("escrow deposit --no-wait (CLI wall, with start-up)")
    phase = Measure("escrow deposit: upload phase (in the CLI)")
    peer_d = Measure("peer: age -d, then openssl dgst -sha256")
    verify = Measure("verification (decrypt + SHA-256, in process)")
    rss: list[int] = []

    print(f"\nlocal store (objects on {options.shm}), {n} interleaved rounds, medians:",
          flush=True)
    with broker(work / "local") as env:
        pgid = int(env["BENCH_BROKER_PGID"])
        for i in range(n):
            c0 = children_cpu()
            seconds = peer_encrypt(work, plain, recipient)
            peer.add(seconds, peer=children_cpu() - c0)

            c0, s0 = children_cpu(), group_cpu(pgid)
            seconds, peak, out = escrow_deposit(env, model, f"local-{i}", options.jobs)
            wall.add(seconds, client=children_cpu() - c0, server=group_cpu(pgid) - s0)
            phase.add(out["timings"]["upload_s"])
            rss.append(peak)

            c0 = children_cpu()
            seconds = peer_decrypt(work, identity)
            peer_d.add(seconds, peer=children_cpu() - c0)

            c0 = self_cpu()
            seconds = verify_in_process(env, out["deposit_id"])
            verify.add(seconds, broker=self_cpu() - c0)
            drop_payloads(env, out["deposit_id"])
    for measure in (peer, wall, phase, peer_d, verify):
        print(measure.line(size))

    s3: dict[str, dict[str, Measure]] = {}
    rss_s3: list[int] = []
    servers = [] if options.skip_s3 else [("moto", moto, True), ("discard", discard_s3, False)]
    for name, server, stores in servers:
        if options.s3_server not in ("both", name):
            continue
        m = options.s3_repeat
        jobs = options.s3_jobs
        print(f"\nS3 ({name} server), {jobs} threads, 64 MiB parts, {m} interleaved rounds:",
              flush=True)
        found = s3[name] = {key: Measure(label) for key, label in (
            ("boto3", "boto3 upload_file (default checksums)"),
            ("boto3-nock", "boto3 upload_file (checksums off)"),
            ("process", "boto3 as a process (default checksums)"),
            ("process-nock", "boto3 as a process (checksums off)"),
            ("escrow", "escrow deposit --no-wait (CLI wall)"),
            ("phase", "escrow deposit: upload phase (in the CLI)"))}
        with server(work) as (endpoint, server_pgid):
            s3_env = {"ESCROW_STORAGE_URL": f"s3://{BUCKET}/escrow",
                      "ESCROW_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                      "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
            with broker(work / f"s3-{name}", s3_env) as env:
                for i in range(m):
                    for key, checksums in (("boto3", True), ("boto3-nock", False)):
                        c0, s0 = self_cpu(), group_cpu(server_pgid)
                        seconds = boto3_upload.upload(endpoint, str(plain), BUCKET, jobs,
                                                      checksums)
                        found[key].add(seconds, client=self_cpu() - c0,
                                       server=group_cpu(server_pgid) - s0)
                        if stores:
                            drop_objects(endpoint, "peer/")
                        c0, s0 = children_cpu(), group_cpu(server_pgid)
                        seconds = boto3_process(endpoint, plain, jobs, checksums)
                        found[key.replace("boto3", "process")].add(
                            seconds, client=children_cpu() - c0,
                            server=group_cpu(server_pgid) - s0)
                        if stores:
                            drop_objects(endpoint, "peer/")
                    c0, s0 = children_cpu(), group_cpu(server_pgid)
                    seconds, peak, out = escrow_deposit(env, model, f"s3-{i}", jobs)
                    found["escrow"].add(seconds, client=children_cpu() - c0,
                                        server=group_cpu(server_pgid) - s0)
                    found["phase"].add(out["timings"]["upload_s"])
                    rss_s3.append(peak)
                    if stores:
                        drop_objects(endpoint, f"escrow/deposits/{out['deposit_id']}/")
        for measure in found.values():
            print(measure.line(size))

    print("\nratios (peer time / escrow time; higher is better):")
    print(f"  local upload, CLI wall   vs peer     {peer.wall / wall.wall:5.2f}   (goal >= 1.0)")
    print(f"  local upload phase       vs peer     {peer.wall / phase.wall:5.2f}")
    print(f"  verification             vs age -d   {peer_d.wall / verify.wall:5.2f}   "
          "(goal >= 1.0)")
    for name, found in s3.items():
        for ours, peer, label in (("escrow", "process", "CLI wall     vs boto3 as a process"),
                                  ("phase", "boto3", "upload phase vs boto3 in process ")):
            wall = found[ours].wall
            print(f"  S3 ({name:7}) {label}  checksums off {found[peer + '-nock'].wall / wall:5.2f}"
                  f", default checksums {found[peer].wall / wall:5.2f}   (goal >= 0.9)")
    print(f"\npeak RSS of escrow deposit: local {max(rss) / MIB:.0f} MiB"
          + (f", S3 {max(rss_s3) / MIB:.0f} MiB" if rss_s3 else "") + "  (goal <= 256 MiB)")


if __name__ == "__main__":
    main()
