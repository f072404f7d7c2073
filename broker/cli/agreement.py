"""`escrow agreement`: a model version's release agreement, its trustees' votes, the lab's
check-ins and early release. Commands only translate; the broker decides and logs."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from broker.cli.access import split_target
from broker.cli.client import client_command, client_options, open_client, reporting
from broker.cli.keys import challenge_secret, read_identities
from broker.cli.nda import ssh_sign
from broker.cli.output import emit
from broker.client.deposit import agreement_path
from broker.client.http import BrokerClient
from broker.errors import InvalidInput

AGREEMENT_HELP = """A model version's release agreement: the conditions (a date, the lab's
silence, trustees' votes, the lab's early release) under which it opens, to an access policy or
to everyone. Once the version is sealed, it changes only as its own amendment rule allows.

\b
  escrow agreement attach acme-ai/gpt-small@2024-05 agreement.yaml     (lab's admin, or a trustee)
  escrow agreement show acme-ai/gpt-small@2024-05
  escrow agreement checkin acme-ai                                     (lab's admin)
  escrow agreement vote acme-ai/gpt-small@2024-05 --ssh-key ~/.ssh/id_ed25519   (trustee)
  escrow agreement vote acme-ai/gpt-small@2024-05 --identity key.txt   (trustee, age challenge)
  escrow agreement release acme-ai/gpt-small@2024-05                   (lab's admin)

The format: README, "Release agreements", and policies/examples/agreements/.
"""

TARGET = "ORG/NAME@VERSION"


@click.group("agreement", help=AGREEMENT_HELP)
def agreement() -> None:
    pass


def _path(target: str) -> str:
    model, version = split_target(target)
    return agreement_path(model, version)


@agreement.command("show")
@click.argument("target", metavar=TARGET)
@client_command
def show(target: str, client: BrokerClient, as_json: bool) -> None:
    """The agreement in words, its state (sealed, or released: TRIGGER), what each trigger
    still misses, the lab's last check-in and the trustees' votes."""
    shown = client.get(_path(target), auth=False)
    emit(shown, as_json, describe(shown))


def describe(shown: dict[str, Any]) -> list[str]:
    lines = [
        f"{shown['model']}@{shown['version']}: {shown['state']}",
        f"agreement #{shown['number']}, sha256 {shown['sha256']}",
        *[f"  {line}" for line in shown["words"]],
    ]
    if shown.get("quarantined_at"):
        lines.append(
            f"quarantined since {shown['quarantined_at']}: no key of it is released, and no "
            "request taken, until an operator lifts it"
        )
    for trigger in shown["triggers"]:
        if trigger["met"]:
            lines.append(f"trigger {trigger['name']}: met")
        else:
            lines.append(
                f"trigger {trigger['name']}: still missing " + "; ".join(trigger["missing"])
            )
    lines.append(f"last check-in: {shown['last_checkin'] or 'never'}")
    for vote in shown["votes"]:
        what = "release" if vote["vote"] == "release" else f"amend to {vote['proposal_sha256']}"
        gone = f", withdrawn {vote['withdrawn_at']}" if vote["withdrawn_at"] else ""
        lines.append(f"vote: {vote['trustee']} for {what} at {vote['at']}{gone}")
    return lines


@agreement.command("attach")
@click.argument("target", metavar=TARGET)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@client_command
def attach(target: str, file: Path, client: BrokerClient, as_json: bool) -> None:
    """Attach FILE as the version's release agreement: before the seal freely (the lab); after
    it, only as an amendment the agreement in force allows (the lab's admin, or a trustee it
    names; a refusal is logged)."""
    made = client.put(_path(target), {"text": file.read_text(encoding="utf-8")})
    shown = made["agreement"]
    emit(
        made,
        as_json,
        [f"release agreement {made['outcome']} (sha256 {shown['sha256']})", *describe(shown)],
    )


@agreement.command("remove")
@click.argument("target", metavar=TARGET)
@client_command
def remove(target: str, client: BrokerClient, as_json: bool) -> None:
    """Remove the version's agreement: only before the seal (after it, refused and logged)."""
    emit(client.delete(_path(target)), as_json, [f"release agreement of {target} removed"])


@agreement.command("checkin")
@click.argument("org")
@client_command
def checkin(org: str, client: BrokerClient, as_json: bool) -> None:
    """Say the lab is still there: every lab_silence trigger of ORG's agreements starts again."""
    made = client.post(f"/api/v1/orgs/{quote(org, safe='')}/checkins")
    emit(made, as_json, [f"{org} checked in at {made['at']}"])


@agreement.command("vote")
@click.argument("target", metavar=TARGET)
@click.option(
    "--ssh-key",
    "ssh_key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="sign the vote with this ssh-ed25519 key (ssh-keygen -Y sign -n escrow-agreement); "
    "it must be a key you registered and proved",
)
@click.option(
    "--identity",
    "identity_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="prove the vote by an age challenge instead: the broker encrypts a secret bound to "
    "the vote to this key (an age identity file or ssh-ed25519 private key you proved), "
    "decrypted here and answered",
)
@click.option(
    "--amendment",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="vote for this amended agreement text instead of a release",
)
@click.option("--withdraw", is_flag=True, help="withdraw your vote (until the release fires)")
@client_command
def vote(
    target: str,
    ssh_key: Path | None,
    identity_file: Path | None,
    amendment: Path | None,
    withdraw: bool,
    client: BrokerClient,
    as_json: bool,
) -> None:
    """A trustee's vote to release the version (or for an amendment), after a fresh login
    (escrow login BROKER first if yours is older), proven with your proven ssh key
    (--ssh-key) or by answering an age challenge to your proven key (--identity)."""
    base = _path(target)
    proposal = hashlib.sha256(amendment.read_bytes()).hexdigest() if amendment else None
    body: dict[str, Any] = {"proposal_sha256": proposal} if proposal else {}
    if withdraw:
        made = client.post(base + "/votes/withdraw", body)
        emit(made, as_json, [f"vote withdrawn; {target} is {made['agreement']['state']}"])
        return
    if (ssh_key is None) == (identity_file is None):
        raise click.UsageError(
            "a vote is proven: give --ssh-key KEY (a signature) or --identity FILE (an age "
            "challenge), one of them"
        )
    query = f"?proposal_sha256={proposal}" if proposal else ""
    message = client.get(base + "/vote-message" + query, auth=False)
    if ssh_key is not None:
        body["ssh_signature"] = ssh_sign(
            ssh_key, message["message"].encode("utf-8"), message["namespace"]
        )
    elif identity_file is not None:
        body.update(answer_vote_challenge(client, base, body, message["message"], identity_file))
    made = client.post(base + "/votes", body)
    verb = "voted" if made["created"] else "had already voted"
    emit(
        made,
        as_json,
        [f"you {verb}; {target} is {made['agreement']['state']}", *describe(made["agreement"])],
    )


def answer_vote_challenge(
    client: BrokerClient, base: str, body: dict[str, Any], expected: str, identity_file: Path
) -> dict[str, str]:
    """Ask for a vote challenge to the key of `identity_file`, decrypt it here, and check that
    it casts the vote we mean before answering it."""
    from broker import age

    identities = read_identities(identity_file)
    if len(identities) != 1:
        raise InvalidInput(
            f"{identity_file} holds {len(identities)} identities; which one to answer with?",
            hint="give a file with one identity",
        )
    made = client.post(
        base + "/vote-challenges", {**body, "key": identities[0].to_recipient().encode()}
    )
    plaintext = io.BytesIO()
    age.decrypt(io.BytesIO(made["challenge"].encode()), plaintext, identities)
    text = plaintext.getvalue().decode("utf-8", errors="replace")
    # The broker says what the answer casts; refuse to answer for any other vote.
    if f"---\n{expected}---\n" not in text:
        raise InvalidInput(
            f"vote challenge {made['id']} is not for the vote you asked for; not answered",
            hint="check the broker URL (escrow login BROKER) and ask again",
        )
    secret = challenge_secret(text)
    if secret is None:
        raise InvalidInput(
            f"vote challenge {made['id']} holds no secret line; not answered",
            hint="ask again; if it persists, the broker is not a weights-escrow broker",
        )
    return {"challenge": made["id"], "response": secret}


@agreement.command("release")
@click.argument("target", metavar=TARGET)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@client_options
@reporting
def release(
    target: str,
    yes: bool,
    broker_url: str | None,
    token: str | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    """The lab's admin releases the version early (its lab_release condition): a release,
    once its trigger fires, is never undone."""
    if not yes:
        click.confirm(
            f"Release {target} early under its agreement? This cannot be undone",
            abort=True,
            err=True,
        )
    client = open_client(broker_url, token, token_file)
    shown = client.post(_path(target) + "/release")
    emit(shown, as_json, describe(shown))
