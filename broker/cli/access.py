"""`escrow request`, `escrow requests [withdraw]`, `escrow review …`, `escrow grants [renew]`:
ask for access, withdraw a request, decide requests, list, renew and revoke grants. Commands only
translate: options to API calls, answers to text or `--json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from broker.cli.client import client_command, client_options, open_client, reporting
from broker.cli.nda import ssh_sign
from broker.cli.output import emit
from broker.client.http import BrokerClient
from broker.domain.hosting import REQUESTABLE_KINDS, WEIGHTS
from broker.errors import InvalidInput

REQUEST_HELP = """Ask for access to a sealed model version, under the model's access policy.

\b
  escrow request acme-ai/gpt-small@2024-05 --purpose "sycophancy study" --days 14
  escrow request acme-ai/gpt-small@2024-05 --purpose "…" --explain   (decides nothing)

When you are not eligible (an NDA unsigned, no proven key …) the request is refused with what is
missing, and recorded as denied: do what is missing, then ask again.
"""


def split_target(target: str) -> tuple[str, str]:
    """ORG/NAME@VERSION -> (ORG/NAME, VERSION)."""
    model, sep, version = target.partition("@")
    if not sep or not model or not version:
        raise InvalidInput(
            f"{target!r} is not ORG/NAME@VERSION", hint="e.g. acme-ai/gpt-small@2024-05"
        )
    return model, version


def decision_lines(decision: dict[str, Any]) -> list[str]:
    lines = [f"  policy {decision['policy']['id']} (sha256 {decision['policy']['sha256']})"]
    lines += [f"  missing: {m}" for m in decision.get("missing", [])]
    lines += [f"  - {r}" for r in decision.get("reasons", [])]
    if decision.get("clamped"):
        lines.append(f"  the duration was clamped to {decision['grant_days']} days")
    return lines


def grant_line(grant: dict[str, Any]) -> str:
    renews = f", renews {grant['renews_grant_id']}" if grant.get("renews_grant_id") else ""
    if grant.get("key_id") is None:  # hosted access (inference, internals): no key, no release
        terms = f"{grant.get('kind', 'inference')} access through /v1, no key"
    else:
        terms = f"key {grant['key_id']}, {grant['releases_per_file']} key release(s) per file"
    return (
        f"{grant['id']}: {grant['model']}@{grant['version']} {grant['state']}, "
        f"valid {grant['not_before']} to {grant['expires_at']}, "
        f"{terms}{renews}{closeout_note(grant)}"
    )


def closeout_note(grant: dict[str, Any]) -> str:
    closeout = grant.get("closeout") or {}
    if closeout.get("attested_at"):
        return f", closed out {closeout['attested_at']}"
    if closeout.get("due_since"):
        late = "OVERDUE" if closeout.get("overdue") else "due"
        return f", close-out {late} since {closeout['due_since']}"
    return ""


def request_name(made: dict[str, Any]) -> str:
    """A request as people read it: a renewal says which grant it renews."""
    if made.get("renews_grant_id"):
        return f"{made['id']} (renewal of grant {made['renews_grant_id']})"
    return made["id"]


# --- escrow request / requests ----------------------------------------------------------------


@click.command("request", help=REQUEST_HELP)
@click.argument("target", metavar="ORG/NAME@VERSION")
@click.option("--purpose", required=True, help="what you need the weights for")
@click.option("--days", type=click.IntRange(1, 3650), help="how long (default: the policy's)")
@click.option("--key", "key_id", help="the proven key to pin the grant to (default: the newest)")
@click.option("--explain", is_flag=True, help="show what the policy decides; request nothing")
@click.option(
    "--kind",
    type=click.Choice(REQUESTABLE_KINDS),
    default=WEIGHTS,
    show_default=True,
    help="weights: the keys to the files; inference: querying the model hosted by the escrow",
)
@client_options
@reporting
def request(
    target: str,
    purpose: str,
    days: int | None,
    key_id: str | None,
    explain: bool,
    kind: str,
    broker_url: str | None,
    token: str | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    model, version = split_target(target)
    body: dict[str, Any] = {"model": model, "version": version, "purpose": purpose}
    if days is not None:
        body["days"] = days
    if key_id:
        body["key_id"] = key_id
    if kind != WEIGHTS:
        body["kind"] = kind
    client = open_client(broker_url, token, token_file)
    if explain:
        result = client.post("/api/v1/requests/explain", body)
        emit(
            result,
            as_json,
            [
                f"{target}: a request now would be {result['would_be']}",
                *decision_lines(result["decision"]),
            ],
        )
        return
    result = client.post("/api/v1/requests", body)
    made = result["request"]
    lines = [f"{made['id']}: {target} is {made['state']}", *decision_lines(made["decision"])]
    if "grant" in result:
        lines.append(grant_line(result["grant"]))
        lines.append(f"fetch it: escrow fetch {target} --identity FILE --out DIR")
    elif made["state"] == "pending":
        lines.append("the reviewers of the model's organisation decide it")
    emit(result, as_json, lines)


@click.group("requests", invoke_without_command=True)
@client_options
@click.pass_context
@reporting
def requests(
    ctx: click.Context,
    broker_url: str | None,
    token: str | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    """Your access requests and their state; `escrow requests withdraw ID` takes one back."""
    if ctx.invoked_subcommand is not None:
        return
    result = open_client(broker_url, token, token_file).get("/api/v1/requests")
    lines = [
        f"{request_name(r)}: {r['model']}@{r['version']} {r['state']}"
        + (f" (grant {r['grant_id']})" if r["grant_id"] else "")
        for r in result["requests"]
    ] or ["you have made no request"]
    emit(result, as_json, lines)


@requests.command("withdraw")
@click.argument("request_id")
@client_command
def withdraw(request_id: str, client: BrokerClient, as_json: bool) -> None:
    """Withdraw REQUEST_ID, a pending request of yours: it leaves the reviewers' queue and
    stays on the record as withdrawn."""
    result = client.post(f"/api/v1/requests/{quote(request_id, safe='')}/withdraw")
    made = result["request"]
    target = f"{made['model']}@{made['version']}"
    lines = [
        f"{request_name(made)}: {target} is {made['state']}",
        f"to ask again: escrow request {target} --purpose …",
    ]
    emit(result, as_json, lines)


# --- escrow review ----------------------------------------------------------------------------


@click.group("review")
def review() -> None:
    """Decide access requests and revoke grants (reviewers and admins of an organisation)."""


@review.command("list")
@client_command
def review_list(client: BrokerClient, as_json: bool) -> None:
    """Pending requests of the organisations you review for, with the researcher's facts."""
    result = client.get("/api/v1/reviews")
    if not result["orgs"]:
        emit(result, as_json, ["you are reviewer or admin of no organisation"])
        return
    lines = [f"pending requests for {', '.join(result['orgs'])}: {len(result['requests'])}"]
    for r in result["requests"]:
        who = r["researcher"]
        ndas = ", ".join(f"{n['nda']} v{n['version']} signed {n['signed_at']}" for n in who["ndas"])
        lines += [
            f"{request_name(r)}: {r['model']}@{r['version']}, "
            f"{r['days_requested'] or 'default'} days",
            *renewal_lines(r.get("renews_grant")),
            f"  researcher: {who['email']} ({'verified' if who['email_verified'] else 'unverified'}"
            f", issuer {who['issuer']}), affiliations: {', '.join(who['affiliations']) or '-'}",
            f"  NDA: {ndas or 'none signed'}",
            f"  purpose: {r['purpose']}",
            *decision_lines(r["decision"]),
        ]
    emit(result, as_json, lines)


def renewal_lines(renewed: dict[str, Any] | None) -> list[str]:
    if renewed is None:
        return []
    key = f", key {renewed['key_id']}" if renewed.get("key_id") else ""
    same = " for the same key" if key else ""
    return [
        f"  renews grant {renewed['id']} ({renewed['state']}, {renewed['not_before']} to "
        f"{renewed['expires_at']}{key}): granted, it continues from "
        f"{renewed['expires_at']}{same}"
    ]


def _decide(
    verb: str, request_id: str, comment: str, client: BrokerClient, as_json: bool
) -> None:
    path = f"/api/v1/requests/{quote(request_id, safe='')}/{verb}"
    result = client.post(path, {"comment": comment})
    made = result["request"]
    lines = [f"{request_name(made)}: {made['state']}"]
    if "grant" in result:
        lines.append(grant_line(result["grant"]))
    elif made["state"] == "pending":
        lines.append("still pending: " + ("; ".join(made["decision"]["missing"]) or "-"))
    emit(result, as_json, lines)


@review.command("approve")
@click.argument("request_id")
@click.option("--comment", default="", help="a note for the record")
@client_command
def approve(request_id: str, comment: str, client: BrokerClient, as_json: bool) -> None:
    """Approve REQUEST_ID; the grant is made once the policy is satisfied."""
    _decide("approve", request_id, comment, client, as_json)


@review.command("deny")
@click.argument("request_id")
@click.option("--comment", default="", help="why, for the record")
@client_command
def deny(request_id: str, comment: str, client: BrokerClient, as_json: bool) -> None:
    """Deny REQUEST_ID (final; the researcher may ask again)."""
    _decide("deny", request_id, comment, client, as_json)


@review.command("revoke")
@click.argument("grant_id")
@client_command
def revoke(grant_id: str, client: BrokerClient, as_json: bool) -> None:
    """Revoke GRANT_ID at once, and its renewals: no key or URL is released under them any
    more."""
    grant = client.post(f"/api/v1/grants/{quote(grant_id, safe='')}/revoke")
    emit(grant, as_json, [grant_line(grant)])


# --- escrow grants ----------------------------------------------------------------------------


@click.group("grants", invoke_without_command=True)
@click.option("--org", help="the grants of an organisation you review for, not yours")
@client_options
@click.pass_context
@reporting
def grants(
    ctx: click.Context,
    org: str | None,
    broker_url: str | None,
    token: str | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    """Your grants (or an organisation's) with their state and expiry; `escrow grants renew ID`
    asks to continue one."""
    if ctx.invoked_subcommand is not None:
        return
    path = "/api/v1/grants" + (f"?org={quote(org, safe='')}" if org else "")
    result = open_client(broker_url, token, token_file).get(path)
    lines = [grant_line(g) for g in result["grants"]] or ["no grants"]
    emit(result, as_json, lines)


@grants.command("renew")
@click.argument("grant_id")
@click.option("--days", type=click.IntRange(1, 3650), help="how long (default: the policy's)")
@click.option("--purpose", help="what you need it for now (default: the grant's first purpose)")
@client_command
def renew(
    grant_id: str,
    days: int | None,
    purpose: str | None,
    client: BrokerClient,
    as_json: bool,
) -> None:
    """Ask to renew GRANT_ID, an active grant of yours, when its policy allows renewal. It is
    reviewed like a request; granted, it continues for the same key from the grant's expiry."""
    body: dict[str, Any] = {}
    if days is not None:
        body["days"] = days
    if purpose:
        body["purpose"] = purpose
    result = client.post(f"/api/v1/grants/{quote(grant_id, safe='')}/renew", body)
    made = result["request"]
    lines = [
        f"{request_name(made)}: {made['model']}@{made['version']} is {made['state']}",
        *decision_lines(made["decision"]),
    ]
    if "grant" in result:
        lines.append(grant_line(result["grant"]))
    elif made["state"] == "pending":
        lines.append("the reviewers of the model's organisation decide it")
    emit(result, as_json, lines)


@grants.command("close")
@click.argument("grant_id")
@click.option(
    "--attest-deleted",
    is_flag=True,
    required=True,
    help="attest that every copy of the weights obtained under the grant was deleted",
)
@click.option("--name", "typed_name", required=True, help="your full name, as your signature")
@click.option(
    "--ssh-key",
    "ssh_key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="also sign the close-out message with this ssh-ed25519 key (ssh-keygen -Y sign -n "
    "escrow-closeout); it must be a key you registered and proved",
)
@client_options
@reporting
def close(
    grant_id: str,
    attest_deleted: bool,
    typed_name: str,
    ssh_key: Path | None,
    broker_url: str | None,
    token: str | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    """Close out GRANT_ID, a grant of yours that ended (expired or revoked): attest that the
    weights were deleted, with your typed name and optionally an SSH signature."""
    if not attest_deleted:
        raise InvalidInput(
            "a close-out attests that the weights were deleted",
            hint='escrow grants close GRANT --attest-deleted --name "Full Name"',
        )
    client = open_client(broker_url, token, token_file)
    path = f"/api/v1/grants/{quote(grant_id, safe='')}/closeout"
    body: dict[str, Any] = {"attest_deleted": True, "typed_name": typed_name}
    if ssh_key is not None:
        message = client.get(path)["message"]
        body["ssh_signature"] = ssh_sign(ssh_key, message.encode("utf-8"), "escrow-closeout")
    result = client.post(path, body)
    lines = [f"grant {result['grant_id']} closed out at {result['attested_at']}"]
    if result.get("ssh_key"):
        lines.append(
            f"ssh signature by key {result['ssh_key']} ({result['ssh_key_fingerprint']}) "
            "verified and stored"
        )
    emit(result, as_json, lines)
