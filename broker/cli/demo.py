"""`escrow demo`: the whole story on the embedded defaults, one plain step at a time.

An organisation deposits a small generated model; a researcher with a proven post-quantum key
and a signed NDA asks for it; a reviewer approves; the researcher fetches and decrypts it and
the bytes are compared with the original; the reviewer revokes the grant and the next fetch is
refused. Everything the researcher, reviewer and depositor do goes over HTTP to a real broker
(`--broker`; started here, in the background, if nothing answers there).

The people are made at the operator console, as `escrow admin user create`, `escrow admin role
grant`, `escrow admin token create` and `escrow admin login-link` do: this command runs next to
the database and the master key (it is the operator acting, with the same services), not a login
bypass. A person's API token is an ordinary user access token of a `link` login session: the
operator issues a single-use login link, it is redeemed into a session (as opening
`/auth/link/<secret>` in a browser would), and the session issues the token. Every one of these
steps is on the audit log.
"""

from __future__ import annotations

import filecmp
import io
import json
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import click

from broker.cli.demo_model import generate_model
from broker.cli.demo_people import ensure_user, grant_role, login_link, user_token
from broker.cli.serving import broker_answers, stop_group, wait_until_serving
from broker.errors import EscrowError, InvalidInput

if TYPE_CHECKING:
    from broker.client.http import BrokerClient

ORG = "acme-ai"
MODEL = f"{ORG}/demo-gpt"
NDA_ID = "acme-research-nda"
RESEARCHER = ("researcher@demo.example", "Ada Researcher")
REVIEWER = ("reviewer@demo.example", "Rita Reviewer")
AUDITOR = ("auditor@demo.example", "Aldo Auditor")
PURPOSE = "escrow demo: sycophancy interpretability study"
DEFAULT_BROKER = "http://127.0.0.1:8080"
_SECRET_LINE = re.compile(r"^secret: ([0-9a-f]{64})$", re.MULTILINE)


class DemoFailed(EscrowError):
    title = "demo check failed"


# --- printing ---------------------------------------------------------------------------------


class Story:
    """Numbered steps on stdout, and the summary the --json line is made of."""

    def __init__(self) -> None:
        self.number = 0
        self.summary: dict[str, Any] = {"ok": False}

    def step(self, text: str) -> None:
        self.number += 1
        click.echo(f"\n[{self.number}] {text}")

    def say(self, text: str) -> None:
        click.echo(f"    {text}")

    def check(self, held: bool, text: str, failure: str) -> None:
        if not held:
            raise DemoFailed(failure, hint="see the steps above; the broker log is in the "
                             "data directory (demo/broker.log) when the demo started it")
        self.say(f"ok: {text}")


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


def run_story(url: str, story: Story, scratch: Path) -> dict[str, Any]:
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
        _story_body(story, escrow, url, version, target, scratch, client_dir)
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


@dataclass
class _Scene:
    """What the story's steps share: where it runs, and who holds what as it goes on."""

    story: Story
    escrow: Any
    url: str
    version: str
    target: str
    scratch: Path
    client_dir: Path
    originals: list[Path] = field(default_factory=list)
    researcher: BrokerClient | None = None
    reviewer: BrokerClient | None = None
    identity_file: Path | None = None
    grant_id: str = ""

    def client(self, token: str) -> BrokerClient:
        from broker.client.http import BrokerClient
        from broker.client.pins import verify_broker

        opened = BrokerClient(self.url, token)
        verify_broker(opened, self.client_dir)  # pinned on first contact, checked after
        return opened

    def people(self) -> tuple[BrokerClient, BrokerClient]:
        """(the researcher's client, the reviewer's), once they are logged in."""
        assert self.researcher is not None and self.reviewer is not None  # _people ran
        return self.researcher, self.reviewer


def _story_body(story: Story, escrow: Any, url: str, version: str, target: str, scratch: Path,
                client_dir: Path) -> None:
    scene = _Scene(story, escrow, url, version, target, scratch, client_dir)
    for step in (_create_org, _deposit, _people, _prove_key, _sign_nda, _ask_and_approve,
                 _show_grant, _fetch_and_compare, _revoke_and_refuse, _audit):
        step(scene)
    story.summary["ok"] = True


def _create_org(scene: _Scene) -> None:
    from broker.domain.principals import OPERATOR
    from broker.services import admin

    story, escrow = scene.story, scene.escrow
    story.step(f"the operator creates the organisation {ORG} (escrow admin org create)")
    with escrow.uow() as uow:
        if admin.find_org(uow, ORG) is None:
            admin.create_org(uow, OPERATOR, ORG)
            story.say(f"organisation {ORG} created")
        else:
            story.say(f"organisation {ORG} exists already")


def _deposit(scene: _Scene) -> None:
    from broker.client.deposit import SEALED, DepositOptions, Depositor
    from broker.domain.principals import OPERATOR
    from broker.services import admin

    story, escrow = scene.story, scene.escrow
    story.step("the operator issues the lab a depositor service token (escrow admin token create)")
    with escrow.uow() as uow:
        issued = admin.create_token(uow, OPERATOR, ORG, "depositor", 1, "escrow demo")
    story.say(f"token {issued.id} for {ORG} (depositor), expires {issued.expires_at:%Y-%m-%d}; "
              "stored only as a hash")

    story.step("the lab has a model: a small safetensors file and its config.json")
    model_dir = scene.scratch / "demo-gpt"
    scene.originals = generate_model(model_dir)
    for path in scene.originals:
        story.say(f"{path.stat().st_size:>10} bytes  {path}")

    story.step(f"the lab deposits it as {scene.target}: encrypted on its machine, uploaded, "
               "verified and sealed by the broker")
    depositor = Depositor(scene.client(issued.token), DepositOptions(
        model=MODEL, version=scene.version, directory=model_dir, config_dir=scene.client_dir))
    deposit = depositor.run().deposit
    story.say(f"deposit {deposit['deposit_id']}, escrow recipient {deposit['recipient'][:40]}…")
    for f in deposit.get("files", []):
        story.say(f"{f.get('sha256')}  {f['path']}")
    story.check(deposit["state"] == SEALED, "sealed under a signed manifest",
                f"the deposit is {deposit['state']}, not sealed")
    story.summary.update(deposit_id=deposit["deposit_id"], sealed=True)


def _people(scene: _Scene) -> None:
    story, escrow = scene.story, scene.escrow
    story.step("the operator creates a researcher and a reviewer of acme-ai "
               "(escrow admin user create, role grant)")
    for email, name in (RESEARCHER, REVIEWER):
        user_id = ensure_user(escrow, email, name)
        story.say(f"user {user_id}: {name} <{email}>")
    grant_role(escrow, REVIEWER[0], "reviewer", ORG)
    story.say(f"{REVIEWER[0]} is reviewer of {ORG}")
    scene.researcher = scene.client(user_token(escrow, RESEARCHER[0]))
    scene.reviewer = scene.client(user_token(escrow, REVIEWER[0]))
    story.say("each logged in through a single-use login link: a `link` session and its "
              "ordinary access token")


def _prove_key(scene: _Scene) -> None:
    from broker import age
    from broker.client.local import write_private

    story, (researcher, _) = scene.story, scene.people()
    story.step("the researcher makes a post-quantum hybrid age identity, registers and proves it "
               "(escrow keys add --identity)")
    identity = age.generate_hybrid_identity()
    identity_file = scene.identity_file = settings_dir(scene.escrow) / "researcher-identity.txt"
    write_private(identity_file, (
        f"# escrow demo researcher, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"# public key: {identity.to_recipient().encode()}\n{identity.encode()}\n").encode())
    story.say(f"identity in {identity_file} (mode 0600)")
    key = researcher.post("/api/v1/me/keys", {"recipient": identity.to_recipient().encode(),
                                              "label": "escrow demo"})
    plaintext = io.BytesIO()
    age.decrypt(io.BytesIO(key["challenge"].encode()), plaintext, [identity])
    found = _SECRET_LINE.search(plaintext.getvalue().decode("utf-8", errors="replace"))
    key = researcher.post(f"/api/v1/me/keys/{key['id']}/proof",
                          {"response": found.group(1) if found else ""})
    story.check(key["state"] == "proven", f"key {key['id']} ({key['type']}) is proven",
                f"key {key['id']} is {key['state']}, not proven")


def _sign_nda(scene: _Scene) -> None:
    from broker.cli.nda import fetch_text

    story, (researcher, _) = scene.story, scene.people()
    story.step(f"the researcher reads and signs the NDA {NDA_ID} (escrow nda sign)")
    text = fetch_text(researcher, NDA_ID, None)
    signature = researcher.post(f"/api/v1/ndas/{quote(NDA_ID, safe='')}/signatures", {
        "version": text["version"], "sha256": text["sha256"], "typed_name": RESEARCHER[1]})
    story.say(f"{'signed' if signature.get('created') else 'signed before'}: {signature['nda']} "
              f"version {signature['version']} (sha256 {signature['sha256'][:16]}…) "
              f"as {RESEARCHER[1]!r}")


def _ask_and_approve(scene: _Scene) -> None:
    story, (researcher, reviewer) = scene.story, scene.people()
    story.step(f"the researcher asks for {scene.target} (escrow request)")
    answer = researcher.post("/api/v1/requests", {
        "model": MODEL, "version": scene.version, "purpose": PURPOSE, "days": 14})
    made = answer["request"]
    story.say(f"request {made['id']} is {made['state']} under policy "
              f"{made['decision']['policy']['id']}")
    for reason in made["decision"].get("reasons", []):
        story.say(f"  - {reason}")
    story.check(made["state"] == "pending", "eligible; waiting for a reviewer of acme-ai",
                f"the request is {made['state']}: "
                + "; ".join(made["decision"].get("missing", [])))

    story.step("the reviewer sees it and approves (escrow review list, review approve)")
    pending = reviewer.get("/api/v1/reviews")["requests"]
    story.check(any(r["id"] == made["id"] for r in pending),
                f"request {made['id']} is in the reviewer's queue", "the reviewer does not see it")
    decided = reviewer.post(f"/api/v1/requests/{quote(made['id'], safe='')}/approve",
                            {"comment": "approved by the escrow demo"})
    story.check("grant" in decided, f"request {made['id']} is {decided['request']['state']}",
                f"no grant was made: {decided['request']['state']}")
    scene.grant_id = decided["grant"]["id"]
    story.summary.update(request_id=made["id"], grant_id=scene.grant_id)


def _show_grant(scene: _Scene) -> None:
    from broker.cli.access import grant_line

    story, (researcher, _), grant_id = scene.story, scene.people(), scene.grant_id
    story.step("the researcher's grants (escrow grants)")
    grants = researcher.get("/api/v1/grants")["grants"]
    mine = next((x for x in grants if x["id"] == grant_id), None)
    if mine is not None:
        story.say(grant_line(mine))
    story.check(mine is not None and mine["state"] == "active", "the grant is active",
                f"grant {grant_id} is not active: {mine}")


def _fetch_and_compare(scene: _Scene) -> None:
    from broker.client.fetch import Fetcher, FetchOptions

    story, (researcher, _), originals = scene.story, scene.people(), scene.originals
    story.step(f"the researcher fetches {scene.target} with the identity (escrow fetch)")
    out = scene.scratch / "fetched"
    result = Fetcher(researcher, FetchOptions(
        target=scene.target, out=out, identity_file=scene.identity_file,
        config_dir=scene.client_dir)).run()
    for f in result.files:
        story.say(f"{f.sha256}  {f.size:>10}  {f.path}  ({f.state})")
    story.say("decrypted in a stream, each SHA-256 checked against the broker-signed manifest")
    story.summary["fetched"] = True

    story.step("the fetched files are byte-identical with the lab's originals")
    identical = all(
        filecmp.cmp(original, out / original.name, shallow=False) for original in originals
    ) and sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")) \
        == sorted(p.name for p in originals)
    story.check(identical, f"{len(originals)} files identical",
                "the fetched files differ from the originals")
    story.summary["byte_identical"] = True


def _revoke_and_refuse(scene: _Scene) -> None:
    from broker.client.fetch import Fetcher, FetchOptions

    story, (researcher, reviewer), grant_id = scene.story, scene.people(), scene.grant_id
    story.step(f"the reviewer revokes grant {grant_id} (escrow review revoke)")
    revoked = reviewer.post(f"/api/v1/grants/{quote(grant_id, safe='')}/revoke")
    story.check(revoked["state"] == "revoked", f"grant {grant_id} is revoked",
                f"grant {grant_id} is {revoked['state']}")
    story.summary["revoked"] = True

    story.step("the researcher tries to fetch again")
    refusals = []
    try:
        Fetcher(researcher, FetchOptions(
            target=scene.target, out=scene.scratch / "again", identity_file=scene.identity_file,
            config_dir=scene.client_dir)).run()
    except EscrowError as error:
        refusals.append(error.message)
        story.say(f"escrow fetch refused: {error.message}")
    try:  # and the broker itself, asked for a file key under the revoked grant
        researcher.post(f"/api/v1/grants/{quote(grant_id, safe='')}/files/0/release")
    except EscrowError as error:
        refusals.append(error.message)
        story.say(f"the broker refuses the key release: {error.message} (on the audit log)")
    story.check(len(refusals) == 2, "refused", "a fetch after revocation was not refused")
    story.summary.update(refused=True, refusal=refusals[-1])


def _audit(scene: _Scene) -> None:
    from broker.client.audit import verify_log
    from broker.services import audit

    story, escrow = scene.story, scene.escrow
    story.step("an auditor replays the whole audit log and checks its signed checkpoint "
               "(escrow audit verify --broker)")
    ensure_user(escrow, *AUDITOR)
    grant_role(escrow, AUDITOR[0], "auditor", None)
    with escrow.uow() as uow:  # the worker signs one every minute; the demo cannot wait
        audit.sign_checkpoint(escrow, uow)
    verified = verify_log(scene.client(user_token(escrow, AUDITOR[0])), directory=scene.client_dir)
    story.say(f"{verified.checkpoint.size} events, root {verified.checkpoint.root.hex()[:16]}…, "
              "signature checked with the pinned checkpoint key")
    story.summary["audit_log_size"] = verified.checkpoint.size


def settings_dir(escrow: Any) -> Path:
    """Where the demo keeps what outlives a run (the researcher's identity, the client files)."""
    directory = escrow.settings.data_dir / "demo"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


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
@click.option("--json", "as_json", is_flag=True, help="a JSON summary as the last line")
def demo(broker_url: str, keep_serving: bool, as_json: bool) -> None:
    """Run the whole story on this data directory: deposit, NDA, request, approval, fetch,
    byte-identical check, revocation, refused fetch. Exit 0 only if every check held."""
    url = broker_url.rstrip("/")
    story = Story()
    served: Served | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="escrow-demo-") as scratch:
            summary = run_story(url, story, Path(scratch))
        served, escrow = summary.pop("_served"), summary.pop("_escrow")
        click.echo(f"\nevery check held: {MODEL}@{summary['version']} was sealed, fetched "
                   "byte-identical, revoked, and then refused")
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
