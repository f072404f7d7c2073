"""Benchmark `escrow fetch` against its peers, in one run (see issue 4, "Speed and memory").

    .venv/bin/python bench/fetch.py [--size 1GiB] [--repeat 3] [--jobs N] [--skip-s3]

Deposits a random file (classical, so the plain age tool can be the peer), seals it, grants a
researcher (seeded in the database, as tests/fetch does) and times, in the same run:
- local store: `escrow fetch` (fetch + decrypt + verify, CLI wall with start-up, peak RSS from
  `/usr/bin/time -v`) against `age -d` then `openssl dgst -sha256` of the same file;
- S3 (moto in server mode): `escrow fetch` against plain boto3 `download_file` of the payload
  object (same size, same server).
Ratios are peer time / our time (higher is better; goals 1.0 local, 0.9 S3). Nothing fails: this
prints figures. Helpers come from bench/deposit.py.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fetch"))

from deposit import (
    BUCKET,
    ESCROW,
    MIB,
    Measure,
    broker,
    children_cpu,
    group_cpu,
    make_random_file,
    moto,
    parse_size,
    peer_decrypt,
    time_v,
    timed,
    verify_in_process,
)


def researcher_and_grant(env: dict[str, str], deposit_id: str, identity: Path) -> str:
    """A researcher whose key is `identity`'s, with an active grant; returns their token."""
    from datetime import UTC, datetime

    from fetch_support import Researcher, grant  # tests/fetch/fetch_support.py

    from broker import age
    from broker.config import load_settings
    from broker.container import build_escrow
    from broker.domain.principals import OPERATOR
    from broker.services import people, sessions

    escrow = build_escrow(load_settings(env))
    with escrow.uow() as uow:
        user = people.upsert_user(uow, OPERATOR, "https://idp.bench", "r@bench.example",
                                  people.Claims(email="r@bench.example", email_verified=True))
        session = sessions.start_session(uow, user, "device", user.issuer, datetime.now(UTC))
        token = sessions.issue_tokens(uow, session).access_token
        uow.commit()
        who = Researcher(token, age.parse_identities(identity.read_text())[0], identity, user.id)
    grant(escrow, who, deposit_id, releases_per_file=1000, expires_in=timedelta(hours=4))
    escrow.engine.dispose()
    return token


def deposit_and_seal(env: dict[str, str], model: Path, version: str) -> str:
    _, out = time_v([ESCROW, "deposit", str(model), "--model", "bench/model", "--version",
                     version, "--classical", "--no-wait", "--json", "--quiet"], env)[0:3:2]
    verify_in_process(env, out["deposit_id"])
    return out["deposit_id"]


def escrow_fetch(env: dict[str, str], token: str, identity: Path, out: Path,
                 version: str, jobs: int | None) -> tuple[float, int, dict[str, Any]]:
    shutil.rmtree(out, ignore_errors=True)
    command = [ESCROW, "fetch", f"bench/model@{version}", "--identity", str(identity),
               "--out", str(out), "--json", "--quiet"]
    if jobs:
        command += ["--jobs", str(jobs)]
    result = time_v(command, {**env, "ESCROW_TOKEN": token})
    shutil.rmtree(out, ignore_errors=True)
    return result


def boto3_download(endpoint: str, key: str, dest: Path, jobs: int) -> float:
    import time

    import boto3
    from boto3.s3.transfer import TransferConfig

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    start = time.perf_counter()
    s3.download_file(BUCKET, key, str(dest), Config=TransferConfig(max_concurrency=jobs))
    elapsed = time.perf_counter() - start
    dest.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--s3-repeat", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--s3-jobs", type=int, default=4)
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--shm", default="/dev/shm")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="escrow-bench-fetch-", dir=options.shm) as tmp:
        run(options, options.size, Path(tmp))


def run(options: argparse.Namespace, size: int, work: Path) -> None:
    model = work / "model"
    plain = model / "weights.bin"
    print(f"making a {size / MIB:.0f} MiB random file in {work}", flush=True)
    make_random_file(plain, size)
    identity = work / "researcher-key.txt"
    timed(["age-keygen", "-o", str(identity)])
    recipient = re.search(r"public key: (age1\w+)", identity.read_text())[1]  # type: ignore[index]
    timed(["age", "-r", recipient, "-o", str(work / "peer.age"), str(plain)])
    peer = Measure("peer: age -d, then openssl dgst -sha256")
    ours = Measure("escrow fetch (CLI wall, with start-up)")
    rss: list[int] = []
    print(f"\nlocal store (objects on {options.shm}), {options.repeat} interleaved rounds:",
          flush=True)
    with broker(work / "local") as env:
        pgid = int(env["BENCH_BROKER_PGID"])
        deposit_and_seal(env, model, "local")
        token = researcher_and_grant(env, _deposit_id(env, "local"), identity)
        for _ in range(options.repeat):
            c0 = children_cpu()
            seconds = peer_decrypt(work, identity)
            peer.add(seconds, peer=children_cpu() - c0)
            c0, s0 = children_cpu(), group_cpu(pgid)
            seconds, peak, _ = escrow_fetch(env, token, identity, work / "out", "local",
                                            options.jobs)
            ours.add(seconds, client=children_cpu() - c0, server=group_cpu(pgid) - s0)
            rss.append(peak)
    for measure in (peer, ours):
        print(measure.line(size))
    print(f"  ratio peer / escrow fetch: {peer.wall / ours.wall:.2f} (goal >= 1.0); "
          f"peak RSS {max(rss) / MIB:.0f} MiB (goal <= 256)", flush=True)
    if options.skip_s3:
        return

    boto = Measure("boto3 download_file of the payload object")
    ours_s3 = Measure("escrow fetch from S3 (CLI wall)")
    rss_s3: list[int] = []
    print(f"\nS3 (moto server), {options.s3_jobs} threads, {options.s3_repeat} rounds:",
          flush=True)
    with moto(work) as (endpoint, server_pgid):
        s3_env = {"ESCROW_STORAGE_URL": f"s3://{BUCKET}/escrow",
                  "ESCROW_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                  "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        with broker(work / "s3", s3_env) as env:
            deposit_and_seal(env, model, "s3")
            deposit_id = _deposit_id(env, "s3")
            token = researcher_and_grant(env, deposit_id, identity)
            key = f"escrow/deposits/{deposit_id}/files/0.payload"
            for _ in range(options.s3_repeat):
                c0, s0 = children_cpu(), group_cpu(server_pgid)
                seconds = boto3_download(endpoint, key, work / "boto3.out", options.s3_jobs)
                boto.add(seconds, server=group_cpu(server_pgid) - s0)
                c0, s0 = children_cpu(), group_cpu(server_pgid)
                seconds, peak, _ = escrow_fetch(env, token, identity, work / "out", "s3",
                                                options.s3_jobs)
                ours_s3.add(seconds, client=children_cpu() - c0,
                            server=group_cpu(server_pgid) - s0)
                rss_s3.append(peak)
    for measure in (boto, ours_s3):
        print(measure.line(size))
    print(f"  ratio boto3 / escrow fetch: {boto.wall / ours_s3.wall:.2f} (goal >= 0.9); "
          f"peak RSS {max(rss_s3) / MIB:.0f} MiB")


def _deposit_id(env: dict[str, str], version: str) -> str:
    from sqlalchemy import select

    from broker.adapters.db.models import Deposit
    from broker.config import load_settings
    from broker.container import build_escrow

    escrow = build_escrow(load_settings(env))
    with escrow.uow() as uow:
        found = uow.session.scalar(select(Deposit.id).where(Deposit.version == version))
    escrow.engine.dispose()
    return str(found)


if __name__ == "__main__":
    main()
