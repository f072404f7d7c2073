"""The studies of live use on the pages: the approved studies a person may join, with what each
captures, and the buttons to consent and to withdraw (also on `/me`).

Views only translate: the studies service authorizes and decides (an unapproved study refuses
consent with its reason); the lab decides studies on its own page (broker/web/lab.py).
"""

from __future__ import annotations

from flask import redirect, render_template, request
from werkzeug.wrappers import Response

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
