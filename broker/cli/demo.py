"""`escrow demo`: the whole story on the embedded defaults, one plain step at a time.

An organisation deposits a small generated model; a researcher with a proven post-quantum key
and a signed NDA asks for it; a reviewer approves; the researcher fetches and decrypts it and
the bytes are compared with the original; the reviewer revokes the grant and the next fetch is
refused. Everything the researcher, reviewer and depositor do goes over HTTP to a real broker
(`--broker`; started here, in the background, if nothing answers there). `--hosted` tells the
hosted-access story instead (`demo_hosted.py`: a model worker serves a tiny language model and
a researcher queries it through the OpenAI-compatible API; needs the serve extra).

The people are made at the operator console, as `escrow admin user create`, `escrow admin role
grant`, `escrow admin token create` and `escrow admin login-link` do: this command runs next to
the database and the master key (it is the operator acting, with the same services), not a login
bypass. A person's API token is an ordinary user access token of a `link` login session: the
operator issues a single-use login link, it is redeemed into a session (as opening
`/auth/link/<secret>` in a browser would), and the session issues the token. Every one of these
steps is on the audit log.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from broker.cli.demo_people import ensure_user, grant_role, login_link
from broker.cli.demo_story import (
    AUDITOR,
    MODEL,
    RESEARCHER,
    REVIEWER,
    Story,
    play_story,
)
from broker.cli.serving import broker_answers, stop_group, wait_until_serving
from broker.errors import EscrowError, InvalidInput

DEFAULT_BROKER = "http://127.0.0.1:8080"


# --- the broker -------------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def stop(self) -> None:
        """Stop the broker this demo started (its own process group: gunicorn, its workers
        and the verification worker); a broker found running is left alone."""
        if self.process is not None:
            stop_group(self.process)


def ensure_broker(url: str, data_dir: Path, story: Story) -> Served:
    if broker_answers(url):
        story.say(f"a broker answers at {url}; using it")
        return Served(url)
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise InvalidInput(
            f"no broker answers at {url}, and the demo starts one only on a loopback http URL",
            hint="start it yourself (`escrow serve`), or pass e.g. --broker http://127.0.0.1:8080",
        )
    host, port = parts.hostname, str(parts.port or 80)
    log = data_dir / "demo" / "broker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    story.say(f"no broker answers at {url}: starting `escrow serve --host {host} --port {port}` "
              f"(log: {log})")
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", "--host", host, "--port", port,
             "--workers", "2"],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stop() ends all of it
        )
    served = Served(url, process, log)
    if wait_until_serving(url, process):
        story.say(f"broker started (pid {process.pid})")
        return served
    served.stop()
    tail = log.read_text(errors="replace").splitlines()[-15:]
    raise EscrowError(f"the broker did not start at {url}:\n" + "\n".join(tail),
                      hint="is the port taken by something else? pass another --broker")


# --- the demo ---------------------------------------------------------------------------------


def run_story(url: str, story: Story, scratch: Path, hosted: bool = False) -> dict[str, Any]:
    from broker.config import load_settings
    from broker.services.setup import initialise

    summary = story.summary
    settings = load_settings()
    moment = datetime.now(UTC)
    version = f"demo-{moment:%Y%m%d-%H%M%S}-{moment.microsecond // 1000:03d}"  # new each run
    target = f"{MODEL}@{version}"
    summary.update(broker=url, model=MODEL, version=version, data_dir=str(settings.data_dir))
    # The demo's own client directory (pins, journals), next to the data it demonstrates.
    client_dir = settings.data_dir / "demo" / "client"
    client_dir.mkdir(parents=True, exist_ok=True)

    story.step(f"escrow init: data directory {settings.data_dir} (SQLite, local store, local key)")
    escrow, created = initialise(settings)
    for line in created:
        story.say(line)
    story.say("initialised (safe to run again)")

    story.step(f"the broker at {url}")
    served = ensure_broker(url, settings.data_dir, story)
    summary["started_broker"] = served.process is not None
    try:
        _check_same_data(escrow, url)
        story.say("it serves this data directory (its manifest signing key is ours)")
        if hosted:
            from broker.cli.demo_hosted import play_hosted

            play_hosted(story, escrow, url, version, scratch, client_dir)
        else:
            play_story(story, escrow, url, version, target, scratch, client_dir)
    except BaseException:
        served.stop()
        raise
    summary["_served"] = served
    summary["_escrow"] = escrow
    return summary


def _check_same_data(escrow: Any, url: str) -> None:
    from broker.services.signing import active_key

    with urllib.request.urlopen(url + "/api/v1/keys", timeout=10) as response:  # noqa: S310
        published = json.load(response)
    with escrow.uow() as uow:
        ours = active_key(uow, "manifest").id
    theirs = published.get("manifest", {}).get("key_id")
    if theirs != ours:
        raise InvalidInput(
            f"the broker at {url} serves another data directory (manifest key {theirs}, "
            f"this one's is {ours})",
            hint="run the demo with the same ESCROW_DATA_DIR as that broker, or pass another "
            "--broker so that the demo starts its own",
        )


def print_login_links(escrow: Any, url: str) -> dict[str, str]:
    ensure_user(escrow, *AUDITOR)
    grant_role(escrow, AUDITOR[0], "auditor", None)
    links = {}
    click.echo("\nOpen the web pages as one of the demo's people (single use, valid 10 minutes; "
               "more with `escrow admin login-link EMAIL`):")
    for role, (email, _name) in (("researcher", RESEARCHER), ("reviewer", REVIEWER),
                                 ("auditor", AUDITOR)):
        links[role] = f"{url}/auth/link/{login_link(escrow, email)}"
        click.echo(f"  {role:<10} {email:<26} {links[role]}")
    return links


@click.command("demo")
@click.option("--broker", "broker_url", default=DEFAULT_BROKER, show_default=True,
              help="the broker to run the story against; started here if none answers")
@click.option("--keep-serving", is_flag=True,
              help="afterwards print login links and keep the broker serving until Ctrl-C")
@click.option("--hosted", is_flag=True,
              help="tell the hosted-access story instead: a model worker serves a tiny language "
              "model, a researcher queries it (needs the serve extra)")
@click.option("--json", "as_json", is_flag=True, help="a JSON summary as the last line")
def demo(broker_url: str, keep_serving: bool, hosted: bool, as_json: bool) -> None:
    """Run the whole story on this data directory: deposit, NDA, request, approval, fetch,
    byte-identical check, revocation, refused fetch; then a version under a release agreement
    released by two trustees' votes, fetched under the policy it unlocks, re-keyed as leaked and
    refused. With --hosted: a tiny language model deposited, hosted by a model worker, queried
    under an inference grant with an API key, the key revoked and refused, the worker stopped.
    Exit 0 only if every check held."""
    url = broker_url.rstrip("/")
    story = Story()
    served: Served | None = None
    try:
        if hosted:
            from broker.cli.demo_hosted import require_serve_extra

            require_serve_extra()
        with tempfile.TemporaryDirectory(prefix="escrow-demo-") as scratch:
            summary = run_story(url, story, Path(scratch), hosted)
        served, escrow = summary.pop("_served"), summary.pop("_escrow")
        if hosted:
            click.echo(f"\nevery check held: {summary['model']}@{summary['version']} was sealed, "
                       "hosted by a model worker, queried with an API key under an inference "
                       "grant, its usage counted; the key was revoked and refused, the worker "
                       "stopped")
        else:
            click.echo(f"\nevery check held: {MODEL}@{summary['version']} was sealed, fetched "
                       "byte-identical, revoked, and then refused; its copy bound by a release "
                       "agreement was opened by two trustees, fetched, re-keyed and refused")
        if keep_serving:
            summary["login_links"] = print_login_links(escrow, url)
    except (EscrowError, OSError) as error:
        story.summary["ok"] = False
        story.summary["error"] = getattr(error, "message", str(error))
        click.echo(f"\ndemo FAILED: "
                   f"{error.diagnostics() if isinstance(error, EscrowError) else error}",
                   err=True)
        if as_json:
            click.echo(json.dumps(_public(story.summary), sort_keys=True))
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(_public(summary), sort_keys=True))
    if keep_serving:
        _serve_until_interrupted(served)
    elif served.process is not None:
        served.stop()
        click.echo("stopped the broker the demo started", err=True)


def _public(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def _serve_until_interrupted(served: Served) -> None:
    if served.process is None:
        click.echo(f"\nthe broker at {served.url} keeps running (it was not started by the demo)")
        return
    click.echo(f"\nthe broker keeps serving the demo data at {served.url}; Ctrl-C stops it")

    def interrupted(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C (even when started with SIGINT ignored, as a background job) and SIGTERM stop the
    # broker this demo started: it runs in its own process group and would outlive us.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        served.process.wait()
    except KeyboardInterrupt:
        click.echo("\nstopping the broker", err=True)
    finally:
        served.stop()
