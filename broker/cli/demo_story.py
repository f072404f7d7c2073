"""The steps of `escrow demo`'s story, each a scene over HTTP against the broker (see `demo.py`),
and the numbered lines it prints as it goes."""

from __future__ import annotations

import filecmp
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from broker.cli.demo_model import generate_model
from broker.cli.demo_people import ensure_user, grant_role, user_token
from broker.errors import EscrowError

if TYPE_CHECKING:
    from broker.client.http import BrokerClient

ORG = "acme-ai"
MODEL = f"{ORG}/demo-gpt"
NDA_ID = "acme-research-nda"
RESEARCHER = ("researcher@demo.example", "Ada Researcher")
REVIEWER = ("reviewer@demo.example", "Rita Reviewer")
AUDITOR = ("auditor@demo.example", "Aldo Auditor")
PURPOSE = "escrow demo: sycophancy interpretability study"


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


# --- the scenes ---------------------------------------------------------------------------------


@dataclass
class Scene:
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
    researcher_token: str = ""  # the researcher's access token (the /v1 API's bearer too)
    identity_file: Path | None = None
    grant_id: str = ""
    depositor_token: str = ""
    bound_version: str = ""  # the version sealed under a release agreement (demo_escrow.py)
    bound_grant_id: str = ""

    def client(self, token: str) -> BrokerClient:
        from broker.client.http import BrokerClient
        from broker.client.pins import verify_broker

        opened = BrokerClient(self.url, token)
        verify_broker(opened, self.client_dir)  # pinned on first contact, checked after
        return opened

    def people(self) -> tuple[BrokerClient, BrokerClient]:
        """(the researcher's client, the reviewer's), once they are logged in."""
        assert self.researcher is not None and self.reviewer is not None  # meet_people ran
        return self.researcher, self.reviewer


def play_story(story: Story, escrow: Any, url: str, version: str, target: str, scratch: Path,
                client_dir: Path) -> None:
    scene = Scene(story, escrow, url, version, target, scratch, client_dir)
    from broker.cli.demo_escrow import escrow_scenes

    for step in (create_org, _deposit, meet_people, prove_key, sign_nda, _ask_and_approve,
                 _show_grant, _fetch_and_compare, _revoke_and_refuse, escrow_scenes, _audit):
        step(scene)
    story.summary["ok"] = True


def create_org(scene: Scene) -> None:
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


def _deposit(scene: Scene) -> None:
    story = scene.story
    issue_depositor_token(scene)

    story.step("the lab has a model: a small safetensors file and its config.json")
    model_dir = scene.scratch / "demo-gpt"
    scene.originals = generate_model(model_dir)
    for path in scene.originals:
        story.say(f"{path.stat().st_size:>10} bytes  {path}")

    story.step(f"the lab deposits it as {scene.target}: encrypted on its machine, uploaded, "
               "verified and sealed by the broker")
    deposit = deposit_model(scene, scene.version)
    story.summary.update(deposit_id=deposit["deposit_id"], sealed=True)


def issue_depositor_token(scene: Scene) -> None:
    """`escrow admin token create`: the lab's depositor token, kept in the scene."""
    from broker.domain.principals import OPERATOR
    from broker.services import admin

    story = scene.story
    story.step("the operator issues the lab a depositor service token (escrow admin token create)")
    with scene.escrow.uow() as uow:
        issued = admin.create_token(uow, OPERATOR, ORG, "depositor", 1, "escrow demo")
    story.say(f"token {issued.id} for {ORG} (depositor), expires {issued.expires_at:%Y-%m-%d}; "
              "stored only as a hash")
    scene.depositor_token = issued.token


def deposit_model(scene: Scene, version: str, agreement: str | None = None,
                  model: str = MODEL) -> dict[str, Any]:
    """`escrow deposit` of the demo model (the files of `scene.originals`) as
    `model@version` with the lab's token, waited until sealed; with `agreement`, that release
    agreement is attached before the seal."""
    from broker.client.deposit import SEALED, DepositOptions, Depositor

    story = scene.story
    depositor = Depositor(scene.client(scene.depositor_token), DepositOptions(
        model=model, version=version, directory=scene.originals[0].parent,
        config_dir=scene.client_dir, agreement=agreement))
    deposit: dict[str, Any] = depositor.run().deposit
    story.say(f"deposit {deposit['deposit_id']}, escrow recipient {deposit['recipient'][:40]}…")
    for f in deposit.get("files", []):
        story.say(f"{f.get('sha256')}  {f['path']}")
    story.check(deposit["state"] == SEALED, "sealed under a signed manifest",
                f"the deposit is {deposit['state']}, not sealed")
    return deposit


def meet_people(scene: Scene) -> None:
    story, escrow = scene.story, scene.escrow
    story.step("the operator creates a researcher and a reviewer of acme-ai "
               "(escrow admin user create, role grant)")
    for email, name in (RESEARCHER, REVIEWER):
        user_id = ensure_user(escrow, email, name)
        story.say(f"user {user_id}: {name} <{email}>")
    grant_role(escrow, REVIEWER[0], "reviewer", ORG)
    story.say(f"{REVIEWER[0]} is reviewer of {ORG}")
    scene.researcher_token = user_token(escrow, RESEARCHER[0])
    scene.researcher = scene.client(scene.researcher_token)
    scene.reviewer = scene.client(user_token(escrow, REVIEWER[0]))
    story.say("each logged in through a single-use login link: a `link` session and its "
              "ordinary access token")


def prove_key(scene: Scene) -> None:
    from broker import age

    story, (researcher, _) = scene.story, scene.people()
    story.step("the researcher makes a post-quantum hybrid age identity, registers and proves it "
               "(escrow keys add --identity)")
    identity = age.generate_hybrid_identity()
    scene.identity_file = write_identity(scene.escrow, "researcher-identity.txt",
                                         "escrow demo researcher", identity)
    story.say(f"identity in {scene.identity_file} (mode 0600)")
    key = register_proven_key(researcher, identity)
    story.check(key["state"] == "proven", f"key {key['id']} ({key['type']}) is proven",
                f"key {key['id']} is {key['state']}, not proven")


def write_identity(escrow: Any, name: str, who: str, identity: Any) -> Path:
    """An age identity file in the demo's directory, readable by its owner only."""
    from broker.client.local import write_private

    path = settings_dir(escrow) / name
    write_private(path, (
        f"# {who}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"# public key: {identity.to_recipient().encode()}\n{identity.encode()}\n").encode())
    return path


def register_proven_key(client: BrokerClient, identity: Any) -> dict[str, Any]:
    """`escrow keys add --identity`: register the key, decrypt its challenge, answer it."""
    from broker import age
    from broker.cli.keys import challenge_secret

    key = client.post("/api/v1/me/keys", {"recipient": identity.to_recipient().encode(),
                                          "label": "escrow demo"})
    plaintext = io.BytesIO()
    age.decrypt(io.BytesIO(key["challenge"].encode()), plaintext, [identity])
    secret = challenge_secret(plaintext.getvalue().decode("utf-8", errors="replace"))
    proven: dict[str, Any] = client.post(f"/api/v1/me/keys/{key['id']}/proof",
                                         {"response": secret or ""})
    return proven


def sign_nda(scene: Scene) -> None:
    from broker.cli.nda import fetch_text

    story, (researcher, _) = scene.story, scene.people()
    story.step(f"the researcher reads and signs the NDA {NDA_ID} (escrow nda sign)")
    text = fetch_text(researcher, NDA_ID, None)
    signature = researcher.post(f"/api/v1/ndas/{quote(NDA_ID, safe='')}/signatures", {
        "version": text["version"], "sha256": text["sha256"], "typed_name": RESEARCHER[1]})
    story.say(f"{'signed' if signature.get('created') else 'signed before'}: {signature['nda']} "
              f"version {signature['version']} (sha256 {signature['sha256'][:16]}…) "
              f"as {RESEARCHER[1]!r}")


def _ask_and_approve(scene: Scene) -> None:
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


def _show_grant(scene: Scene) -> None:
    from broker.cli.access import grant_line

    story, (researcher, _), grant_id = scene.story, scene.people(), scene.grant_id
    story.step("the researcher's grants (escrow grants)")
    grants = researcher.get("/api/v1/grants")["grants"]
    mine = next((x for x in grants if x["id"] == grant_id), None)
    if mine is not None:
        story.say(grant_line(mine))
    story.check(mine is not None and mine["state"] == "active", "the grant is active",
                f"grant {grant_id} is not active: {mine}")


def _fetch_and_compare(scene: Scene) -> None:
    scene.story.step(f"the researcher fetches {scene.target} with the identity (escrow fetch)")
    fetch_identical(scene, scene.version, "fetched")
    scene.story.summary.update(fetched=True, byte_identical=True)


def fetch_identical(scene: Scene, version: str, folder: str) -> None:
    """`escrow fetch MODEL@version` as the researcher, then the check that every fetched file
    is byte-identical with the lab's original."""
    from broker.client.fetch import Fetcher, FetchOptions

    story, (researcher, _), originals = scene.story, scene.people(), scene.originals
    out = scene.scratch / folder
    result = Fetcher(researcher, FetchOptions(
        target=f"{MODEL}@{version}", out=out, identity_file=scene.identity_file,
        config_dir=scene.client_dir)).run()
    for f in result.files:
        story.say(f"{f.sha256}  {f.size:>10}  {f.path}  ({f.state})")
    story.say("decrypted in a stream, each SHA-256 checked against the broker-signed manifest")
    identical = all(
        filecmp.cmp(original, out / original.name, shallow=False) for original in originals
    ) and sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")) \
        == sorted(p.name for p in originals)
    story.check(identical, f"{len(originals)} files identical with the lab's originals",
                "the fetched files differ from the originals")


def _revoke_and_refuse(scene: Scene) -> None:
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


def _audit(scene: Scene) -> None:
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
