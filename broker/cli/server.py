"""Server-side commands: they run next to the database and the master key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

import click

from broker.adapters.db.engine import upgrade
from broker.config import Settings, load_settings
from broker.container import Escrow, build_escrow
from broker.deployment import record_public_url, require_deployment
from broker.domain.principals import OPERATOR
from broker.services import worker as jobs
from broker.services.setup import initialise
from broker.services.verification import run_verification

PARENT_PID = "ESCROW_WORKER_PARENT_PID"  # set by `escrow serve` for the worker it starts


def operator_settings(env: dict[str, str] | None = None) -> Settings:
    """The settings of the deployment in ESCROW_DATA_DIR, refused (with how to point at the
    right one) when that folder is not one `escrow init` set up: an operator command never
    makes a second, empty deployment where it happens to run."""
    settings = load_settings(env)
    require_deployment(settings.data_dir)
    return settings


def server_escrow() -> Escrow:
    """The escrow of the deployment operator commands act on (see `operator_settings`)."""
    return build_escrow(operator_settings())


@click.command()
def init() -> None:
    """Create the data directory, keys and database schema (safe to run again)."""
    settings = load_settings()
    _escrow, created = initialise(settings)
    for line in created:
        click.echo(line)
    click.echo(f"escrow initialised in {settings.data_dir}")


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="the alembic revision")
def db_upgrade(revision: str) -> None:
    """Apply alembic migrations (the only way the schema changes)."""
    upgrade(operator_settings().database_url, revision)
    click.echo(f"database upgraded to {revision}")


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to listen on; the public URL follows it unless ESCROW_PUBLIC_URL is set",
)
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=int,
    help="port to listen on; the public URL follows it unless ESCROW_PUBLIC_URL is set",
)
@click.option(
    "--workers",
    default=4,
    show_default=True,
    type=int,
    help="HTTP worker processes (sync workers stream big bodies fastest)",
)
@click.option(
    "--in-process-worker/--no-in-process-worker",
    default=None,
    help="also run the verification worker (default: on, ESCROW_IN_PROCESS_WORKER)",
)
def serve(host: str, port: int, workers: int, in_process_worker: bool | None) -> None:
    """Run the broker (gunicorn) and, on embedded defaults, one verification worker."""
    from gunicorn.app.base import BaseApplication

    from broker import create_app

    env = dict(os.environ)
    if not env.get("ESCROW_PUBLIC_URL"):
        # Store URLs, login links and the demo name the broker where it is served.
        env["ESCROW_PUBLIC_URL"] = served_url(host, port)
    settings = operator_settings(env)
    run_worker = settings.run_worker_in_process if in_process_worker is None else in_process_worker

    class Broker(BaseApplication):
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": f"{host}:{port}",
                "workers": workers,
                "worker_class": "sync",
                "timeout": 600,
                "graceful_timeout": 5,
                "accesslog": "-",
                "logger_class": "broker.cli.access_log.RedactingLogger",
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(settings)

    create_app(settings)  # fail here, with a clear message, before forking
    record_public_url(settings.data_dir, settings.public_url)  # for `escrow admin login-link`
    click.echo(
        f"broker on {served_url(host, port)} (public URL {settings.public_url}; "
        f"data: {settings.data_dir})",
        err=True,
    )
    if host in WILDCARD_HOSTS and not os.environ.get("ESCROW_PUBLIC_URL"):
        click.echo(
            f"note: serving on every interface, but links and store URLs name "
            f"{settings.public_url}: set ESCROW_PUBLIC_URL to the URL clients use",
            err=True,
        )
    # The verification worker is a process of its own, never a thread of the forking arbiter:
    # SQLite (and most drivers) must not carry an open connection across fork().
    job_runner = (
        subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "worker"],
            env={**env, PARENT_PID: str(os.getpid())},
        )
        if run_worker
        else None
    )
    try:
        Broker().run()
    finally:
        if job_runner is not None:
            job_runner.terminate()
            job_runner.wait(timeout=30)


WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - names compared, nothing bound here


def served_url(host: str, port: int) -> str:
    """The URL a broker bound to `host`:`port` is reached at from this machine."""
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@click.command()
@click.option("--once", is_flag=True, help="run the queued jobs, then exit")
def worker(once: bool) -> None:
    """Run the job queue: verification of finalised deposits."""
    escrow = server_escrow()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if os.environ.get(PARENT_PID):
        _stop_when_orphaned(int(os.environ[PARENT_PID]), stop)
    if once:
        click.echo(f"ran {jobs.run_pending(escrow, stop=stop)} job(s)")
        return
    jobs.run_forever(escrow, stop)


def _stop_when_orphaned(parent: int, stop: threading.Event) -> None:
    """A worker started by `escrow serve` ends with it, even when it was killed (no orphans):
    its job goes back to the queue and the checkpoint is signed on the way out."""

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@click.command()
@click.argument("deposit_id")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def verify(deposit_id: str, as_json: bool) -> None:
    """Decrypt and hash every file of a deposit against its manifest (operator)."""
    from broker.cli.output import emit

    report = run_verification(server_escrow(), deposit_id, OPERATOR)
    lines = [
        f"{'ok  ' if f.ok else 'BAD '} {f.path}" + (f": {f.problem}" if f.problem else "")
        for f in report.files
    ]
    lines.append(
        "verified: every file matches"
        if report.ok
        else f"verification FAILED for {len(report.bad)} file(s)"
    )
    emit(
        {"deposit_id": deposit_id, "ok": report.ok, "files": [vars(f) for f in report.files]},
        as_json,
        lines,
    )
    sys.exit(0 if report.ok else 1)
