"""`escrow study …`: studies of live use of a hosted model, with consent (through the API).

    escrow study register ORG/MODEL[@VERSION] --name NAME --purpose TEXT --recipient age1… [...]
    escrow study list | show STUDY
    escrow study approve STUDY | reject STUDY [--note TEXT]     the model's lab (an admin)
    escrow study close STUDY                                    its owner or the lab
    escrow study consent STUDY | withdraw STUDY                 a person using the hosted model
    escrow study member add STUDY EMAIL|USER | member list STUDY    its team, added by the owner
    escrow study member remove STUDY EMAIL|USER                 the owner removes a member
    escrow study fetch STUDY --identity KEY [--out DIR]         the study's team: its captures
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from broker.cli.client import EXIT_INTERRUPTED, client_options, open_client, reporting
from broker.cli.output import emit


@click.group()
def study() -> None:
    """Studies of live use of a hosted model: registered by researchers, approved by the lab,
    joined by people who consent to donate their conversations (encrypted to the study)."""


def _path(ref: str, tail: str = "") -> str:
    return f"/api/v1/studies/{quote(ref, safe='')}{tail}"


def _lines(found: dict[str, Any]) -> list[str]:
    lines = [f"{found['id']}  {found['name']}  {found['model']}  {found['state']}"
             + ("  (you consent)" if found["consenting"] else ""),
             f"  title: {found['title']}", f"  purpose: {found['purpose']}",
             f"  owner: user {found['owner']}; registered {found['created_at']}"]
    lines += [f"  recipient: {r}" for r in found["recipients"]]
    if found["decided_at"]:
        note = f" ({found['decision_note']})" if found["decision_note"] else ""
        lines.append(f"  decided {found['decided_at']}{note}")
    if found["closed_at"]:
        lines.append(f"  closed {found['closed_at']}")
    return lines


@study.command("register")
@click.argument("target", metavar="ORG/MODEL[@VERSION]")
@click.option("--name", required=True,
              help="the study's short name (lowercase, e.g. tutoring-2027)")
@click.option("--title", default=None, help="its title (default: the name)")
@click.option("--purpose", required=True, help="what it studies and why, for the lab and the "
              "people asked to consent")
@click.option("--recipient", "recipients", multiple=True, required=True,
              help="an age recipient (age1…) the captures are encrypted to; repeat for several")
@client_options
@reporting
def register(target: str, name: str, title: str | None, purpose: str,
             recipients: tuple[str, ...], broker_url: str | None, token: str | None,
             token_file: Path | None, as_json: bool) -> None:
    """Register a study of TARGET (every version, or one): proposed until the lab approves it."""
    made = open_client(broker_url, token, token_file).post("/api/v1/studies", {
        "model": target, "name": name, "title": title, "purpose": purpose,
        "recipients": list(recipients)})
    emit(made, as_json, [*_lines(made),
                         f"the lab of {made['model']} approves it: escrow study approve "
                         f"{made['name']}"])


@study.command("list")
@client_options
@reporting
def list_studies(broker_url: str | None, token: str | None, token_file: Path | None,
                 as_json: bool) -> None:
    """The studies you may see: approved ones, yours, your lab's."""
    found = open_client(broker_url, token, token_file).get("/api/v1/studies")
    lines = [f"{s['id']}  {s['name']}  {s['model']}  {s['state']}"
             + ("  (you consent)" if s["consenting"] else "") for s in found["studies"]]
    emit(found, as_json, lines or ["no studies"])


@study.command("show")
@click.argument("ref", metavar="STUDY")
@client_options
@reporting
def show(ref: str, broker_url: str | None, token: str | None, token_file: Path | None,
         as_json: bool) -> None:
    """One study (its id or name)."""
    found = open_client(broker_url, token, token_file).get(_path(ref))
    emit(found, as_json, _lines(found))


def _decide(decision: str) -> click.Command:
    @click.argument("ref", metavar="STUDY")
    @click.option("--note", default=None, help="why, in a few words (kept with the study)")
    @client_options
    @reporting
    def command(ref: str, note: str | None, broker_url: str | None, token: str | None,
                token_file: Path | None, as_json: bool) -> None:
        done = open_client(broker_url, token, token_file).post(
            _path(ref, f"/{decision}"), {"note": note} if note else {})
        emit(done, as_json, _lines(done))

    command.__doc__ = (f"The model's lab (an admin) {decision}s a proposed study"
                       + (": people may then consent to it." if decision == "approve" else "."))
    return study.command(decision)(command)


approve = _decide("approve")
reject = _decide("reject")


@study.command("close")
@click.argument("ref", metavar="STUDY")
@client_options
@reporting
def close(ref: str, broker_url: str | None, token: str | None, token_file: Path | None,
          as_json: bool) -> None:
    """Close a study (its owner or the lab): nothing more is captured."""
    done = open_client(broker_url, token, token_file).post(_path(ref, "/close"))
    emit(done, as_json, _lines(done))


@study.command("consent")
@click.argument("ref", metavar="STUDY")
@client_options
@reporting
def consent(ref: str, broker_url: str | None, token: str | None, token_file: Path | None,
            as_json: bool) -> None:
    """Donate your hosted conversations to an approved study, from now until you withdraw."""
    given = open_client(broker_url, token, token_file).post(_path(ref, "/consent"))
    emit(given, as_json, [
        f"you consent to study {given['study']} since {given['given_at']} (participant "
        f"{given['id']}): your /v1 exchanges with its model are encrypted to the study team",
        f"withdraw at any time: escrow study withdraw {given['study']}"])


@study.command("withdraw")
@click.argument("ref", metavar="STUDY")
@client_options
@reporting
def withdraw(ref: str, broker_url: str | None, token: str | None, token_file: Path | None,
             as_json: bool) -> None:
    """Withdraw your consent: your next exchange is not captured."""
    done = open_client(broker_url, token, token_file).delete(_path(ref, "/consent"))
    emit(done, as_json, [f"consent to study {done['study']} withdrawn at {done['withdrawn_at']}: "
                         "nothing more is captured"])


@study.group("member")
def member() -> None:
    """The study's team besides its owner: members list and fetch its captures too."""


def _member_lines(team: dict[str, Any]) -> list[str]:
    return [f"user {m['user']}  {m['name'] or '(no name given)'}  added {m['added_at']}"
            for m in team["members"]] or ["no members besides the owner"]


@member.command("add")
@click.argument("ref", metavar="STUDY")
@click.argument("who", metavar="EMAIL|USER")
@client_options
@reporting
def member_add(ref: str, who: str, broker_url: str | None, token: str | None,
               token_file: Path | None, as_json: bool) -> None:
    """Add a person (their email or user id) to the team of your study: they list and fetch
    its captures too (escrow study fetch)."""
    team = open_client(broker_url, token, token_file).post(_path(ref, "/members"),
                                                           {"user": who})
    emit(team, as_json, _member_lines(team))


@member.command("remove")
@click.argument("ref", metavar="STUDY")
@click.argument("who", metavar="EMAIL|USER")
@client_options
@reporting
def member_remove(ref: str, who: str, broker_url: str | None, token: str | None,
                  token_file: Path | None, as_json: bool) -> None:
    """Remove a person (their email or user id) from the team of your study: from now on they
    neither list nor fetch its captures."""
    team = open_client(broker_url, token, token_file).delete(
        _path(ref, "/members/" + quote(who, safe="")))
    emit(team, as_json, _member_lines(team))


@member.command("list")
@click.argument("ref", metavar="STUDY")
@client_options
@reporting
def member_list(ref: str, broker_url: str | None, token: str | None, token_file: Path | None,
                as_json: bool) -> None:
    """The team of a study you are in, besides its owner."""
    team = open_client(broker_url, token, token_file).get(_path(ref, "/members"))
    emit(team, as_json, _member_lines(team))


@study.command("fetch")
@click.argument("ref", metavar="STUDY")
@click.option("--identity", "identity_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="the study team's age identity file (one of the study's recipients)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="directory for the captures, one JSON file each (default: ./STUDY)")
@client_options
@reporting
def fetch(ref: str, identity_file: Path, out: Path | None, broker_url: str | None,
          token: str | None, token_file: Path | None, as_json: bool) -> None:
    """Download your study's captures, check and decrypt them locally (resumable: a rerun
    skips those already fetched)."""
    from broker.client.fetch.manifest import load_identities
    from broker.client.studies import fetch_study

    identities = load_identities(identity_file)
    client = open_client(broker_url, token, token_file)
    try:
        result = fetch_study(client, ref, identities, out or Path(ref),
                             say=lambda line: click.echo(line, err=True))
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to resume", err=True)
        sys.exit(EXIT_INTERRUPTED)
    emit(result.to_json(), as_json, [
        f"study {result.name} ({result.study_id}): {len(result.fetched)} capture(s) fetched, "
        f"{len(result.skipped)} already there, in {result.out}"])
