"""The studies of live use on the pages: the approved studies a person may join, with what each
captures, and the buttons to consent and to withdraw (also on `/me`); a study's own page, where
its owner adds and removes the members of its team, and its owner or the lab closes it.

Views only translate: the studies service authorizes and decides (an unapproved study refuses
consent with its reason); the lab decides studies on its own page (broker/web/lab.py).
"""

from __future__ import annotations

from flask import redirect, render_template, request
from werkzeug.wrappers import Response

from broker.errors import InvalidInput
from broker.http.common import escrow
from broker.services import studies
from broker.web.common import page_blueprint, page_doc, person

bp = page_blueprint("web_studies", __name__)

OPENAPI = {
    "/studies": page_doc(
        query=("consented", "withdrawn"),
        get="the approved studies of live use you may donate your conversations to: each "
        "one's model, purpose, team and what is captured, with Consent and Withdraw buttons",
    ),
    "/studies/{study}": page_doc(
        "study", query=("added", "removed", "closed"),
        get="one study you may see: its model, purpose, state and dates; to its team, its "
        "members; to its owner, Add and Remove buttons for its team and a Close button; to the "
        "lab's admins, the Close button",
    ),
    "/studies/{study}/members": page_doc(
        "study", post="the study's owner adds a person to its team by email (form: email, "
        "csrf_token)"
    ),
    "/studies/{study}/members/{user}/remove": page_doc(
        "study", "user", post="the study's owner removes a member from its team: they no longer "
        "list or fetch its captures (form: csrf_token)"
    ),
    "/studies/{study}/close": page_doc(
        "study", post="its owner or the lab's admin closes the study: nothing more is captured "
        "(form: csrf_token)"
    ),
    "/studies/{study}/consent": page_doc(
        "study", post="consent to an approved study: your next exchanges are captured for it "
        "(form: csrf_token)"
    ),
    "/studies/{study}/withdraw": page_doc(
        "study", post="withdraw your consent: your next exchange is not captured (form: back "
        "(studies or me), csrf_token)"
    ),
}


@bp.get("/studies")
def index() -> str:
    actor = person()
    with escrow().uow() as uow:
        found = studies.joinable(uow, actor)
    names = {listed.study["name"]: listed.study for listed in found}
    consented = names.get(request.args.get("consented", ""))
    withdrawn = names.get(request.args.get("withdrawn", ""))
    return render_template(
        "studies/index.html", studies=found,
        consented=consented if consented and consented["consenting"] else None,
        withdrawn=withdrawn if withdrawn and not withdrawn["consenting"] else None,
    )


@bp.post("/studies/<study>/consent")
def consent(study: str) -> Response:
    actor = person()
    with escrow().uow() as uow:
        given = studies.consent(uow, actor, study)
    return redirect(f"/studies?consented={given['study']}#study-{given['study_id']}", code=303)


@bp.post("/studies/<study>/withdraw")
def withdraw(study: str) -> Response:
    actor = person()
    with escrow().uow() as uow:
        ended = studies.withdraw(uow, actor, study)
    if request.form.get("back") == "studies":
        return redirect(f"/studies?withdrawn={ended['study']}#study-{ended['study_id']}",
                        code=303)
    return redirect(f"/me?withdrawn={ended['id']}#studies", code=303)


# --- a study's own page: its team and its closing ----------------------------------------------


@bp.get("/studies/<study>")
def show(study: str) -> str:
    actor = person()
    with escrow().uow() as uow:
        shown = studies.study_page(uow, actor, study)
    members = shown.members["members"] if shown.members is not None else []
    added = next((m for m in members if m["user"] == request.args.get("added")), None)
    already = request.args.get("added") == "already" and shown.manages
    removed = request.args.get("removed", "")
    closed = request.args.get("closed") == "1" and shown.study["state"] == "closed"
    return render_template(
        "studies/show.html", shown=shown, study=shown.study, members=members, added=added,
        removed=removed if removed.isdigit() and removed not in {m["user"] for m in members}
        else "", already=already, closed=closed,
    )


@bp.post("/studies/<study>/members")
def add_member(study: str) -> Response:
    actor = person()
    email = request.form.get("email", "").strip()
    if not email:
        raise InvalidInput("no email given",
                           hint="type the email of the person to add to the team")
    with escrow().uow() as uow:
        before = {m["user"] for m in studies.list_members(uow, actor, study)["members"]}
        team = studies.add_member(uow, actor, study, email)
    new = [m["user"] for m in team["members"] if m["user"] not in before]
    notice = f"added={new[0]}" if new else "added=already"
    return redirect(f"/studies/{team['study_id']}?{notice}#team", code=303)


@bp.post("/studies/<study>/members/<user>/remove")
def remove_member(study: str, user: str) -> Response:
    actor = person()
    with escrow().uow() as uow:
        team = studies.remove_member(uow, actor, study, user)
    return redirect(f"/studies/{team['study_id']}?removed={user}#team", code=303)


@bp.post("/studies/<study>/close")
def close(study: str) -> Response:
    actor = person()
    with escrow().uow() as uow:
        closed = studies.close(uow, actor, study)
    return redirect(f"/studies/{closed['id']}?closed=1", code=303)
