"""The escrow half of `escrow demo`'s story, after the broker half (`demo_story.py`): a version
sealed under a release agreement is opened by two trustees' votes and fetched under the policy
it unlocks; then, as if it had leaked, it is re-keyed, its grant revoked and the old key release
refused."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from broker.cli.demo_people import ensure_user, user_token
from broker.cli.demo_story import (
    MODEL,
    ORG,
    PURPOSE,
    Scene,
    fetch_identical,
    register_proven_key,
    write_identity,
)
from broker.errors import EscrowError

TRUSTEES = (
    ("trustee-a@demo.example", "Tara Trustee"),
    ("trustee-b@demo.example", "Tom Trustee"),
    ("trustee-c@demo.example", "Tess Trustee"),
)
REKEY_WAIT_S = 120.0  # the broker's worker re-encrypts a few kilobytes: seconds, not minutes


def agreement_text() -> str:
    """The demo's release agreement: the lab silent (for 0 days: at once) AND 2 of the 3
    trustees voting open the version to everyone logged in, without review."""
    trustees = "".join(f"  - {email}\n" for email, _ in TRUSTEES)
    return (
        f"model: {MODEL}\n"
        f"trustees:\n{trustees}"
        "triggers:\n"
        "  - name: trustees\n"
        "    when:\n"
        "      all_of:\n"
        "        - lab_silence: {days: 0}\n"
        "        - trustee_vote: {count: 2}\n"
        "    unlocks: public\n"
        "description: escrow demo, opened when two of three trustees vote\n"
    )


def escrow_scenes(scene: Scene) -> None:
    for step in (_deposit_under_agreement, _trustees_vote, _fetch_released, _rekey_leaked):
        step(scene)


def _agreement_path(version: str) -> str:
    name = MODEL.partition("/")[2]
    return "/api/v1/agreements/" + "/".join(quote(p, safe="") for p in (ORG, name, version))


def _deposit_under_agreement(scene: Scene) -> None:
    from broker.cli.demo_story import deposit_model

    story = scene.story
    scene.bound_version = f"{scene.version}-bound"
    story.step(f"the lab deposits {MODEL}@{scene.bound_version} under a release agreement "
               "(escrow deposit --agreement): the lab silent AND 2 of 3 trustees → public")
    deposit_model(scene, scene.bound_version, agreement_text())
    assert scene.researcher is not None
    shown = scene.researcher.get(_agreement_path(scene.bound_version))
    for line in shown["words"]:
        story.say(line)
    story.check(shown["state"] == "sealed", "sealed and bound: nobody may fetch it yet",
                f"the agreement is {shown['state']}, not sealed")
    story.summary["agreement_sha256"] = shown["sha256"]


def _trustees_vote(scene: Scene) -> None:
    from broker import age
    from broker.cli.agreement import answer_vote_challenge

    story, escrow, path = scene.story, scene.escrow, _agreement_path(scene.bound_version)
    story.step("two of the three trustees prove a key and vote to release "
               "(escrow agreement vote --identity: an age challenge to their proven key)")
    shown: dict[str, Any] = {}
    for email, name in TRUSTEES[:2]:
        ensure_user(escrow, email, name)
        trustee = scene.client(user_token(escrow, email))
        identity = age.generate_x25519_identity()
        identity_file = write_identity(escrow, f"{email.partition('@')[0]}-identity.txt",
                                       f"escrow demo trustee {email}", identity)
        register_proven_key(trustee, identity)
        message = trustee.get(path + "/vote-message", auth=False)["message"]
        answer = answer_vote_challenge(trustee, path, {}, message, identity_file)
        shown = trustee.post(path + "/votes", answer)["agreement"]
        story.say(f"{email} voted: the version is {shown['state']}")
    story.check(shown.get("state") == "released: trustees",
                "released by the trustees' votes (on the audit log: agreement.triggered)",
                f"the version is {shown.get('state')}, not released")
    story.summary["released"] = True


def _fetch_released(scene: Scene) -> None:
    story, (researcher, _) = scene.story, scene.people()
    story.step(f"the researcher asks for {MODEL}@{scene.bound_version}: decided under the policy "
               "the agreement unlocked (public: no review)")
    made = researcher.post("/api/v1/requests", {
        "model": MODEL, "version": scene.bound_version, "purpose": PURPOSE, "days": 7})
    policy = made["request"]["decision"]["policy"]["id"]
    story.check("grant" in made, f"granted at once under policy {policy}",
                f"no grant: the request is {made['request']['state']}")
    scene.bound_grant_id = made["grant"]["id"]
    fetch_identical(scene, scene.bound_version, "fetched-bound")
    story.summary["released_fetched"] = True


def _rekey_leaked(scene: Scene) -> None:
    from broker.client.fetch import Fetcher, FetchOptions
    from broker.domain.principals import OPERATOR
    from broker.services import rekey

    story, escrow, (researcher, _) = scene.story, scene.escrow, scene.people()
    version, grant_id = scene.bound_version, scene.bound_grant_id
    story.step(f"{MODEL}@{version} leaked: the operator re-keys it "
               "(escrow admin version rekey --reason)")
    with escrow.uow() as uow:
        queued = rekey.request_rekey(escrow, uow, OPERATOR, MODEL, version,
                                     "escrow demo: a copy was found outside the escrow")
    story.say(f"{queued['grants_revoked']} grant(s) revoked; the broker's worker re-encrypts "
              "every file under fresh keys")
    done = _wait_for_rekey(escrow, version)
    story.check(done["state"] == "done",
                f"re-keyed: generation {done['generation']}, {done['files_done']} files, "
                f"{done['old_objects_deleted']} old objects removed",
                f"the rekey is {done['state']}: {done['error']}")

    story.step(f"the old grant {grant_id} no longer releases a key")
    try:
        researcher.post(f"/api/v1/grants/{quote(grant_id, safe='')}/files/0/release")
        refused = ""
    except EscrowError as error:
        refused = error.message
        story.say(f"the broker refuses the key release: {error.message}")
    try:
        Fetcher(researcher, FetchOptions(
            target=f"{MODEL}@{version}", out=scene.scratch / "after-rekey",
            identity_file=scene.identity_file, config_dir=scene.client_dir)).run()
    except EscrowError as error:
        story.say(f"escrow fetch refused: {error.message}")
    story.check("revoked" in refused, "refused", "a key release after the rekey was not refused")
    story.summary.update(rekeyed=True, rekey_refusal=refused)


def _wait_for_rekey(escrow: Any, version: str) -> dict[str, Any]:
    from broker.domain.principals import OPERATOR
    from broker.services import rekey

    deadline = time.monotonic() + REKEY_WAIT_S
    while True:
        with escrow.uow() as uow:
            shown = dict(rekey.show(uow, OPERATOR, MODEL, version))
        if shown["state"] in ("done", "failed") or time.monotonic() > deadline:
            return shown
        time.sleep(0.5)
