"""The lab's pages, for an organisation's reviewers, admins and depositors: the review queue with
the researchers' verified facts, decisions, grants and revocation, deposits with their
verification state, members with their roles, and the studies of live use proposed for the
organisation's models, to approve or reject.

Every page asks `authorize` (through `require`, and again inside the services) for the
organisation concerned; views only parse, call a service and render.
"""

from __future__ import annotations

from flask import redirect, render_template, request
from werkzeug.wrappers import Response

from broker.domain.access import Action
from broker.errors import BadRequest
from broker.http.common import escrow
from broker.services import access, catalog, closeouts, grants, hosted_usage, members, studies
from broker.web.common import (
    allowed,
    page_blueprint,
    page_doc,
    person,
    require,
    require_some_org,
)

bp = page_blueprint("web_lab", __name__)

LAB_ACTIONS = {  # section of an organisation's lab page -> the action that opens it
    "reviews": Action.REVIEW_READ,
    "grants": Action.GRANT_READ_ORG,
    "usage": Action.GRANT_READ_ORG,
    "deposits": Action.DEPOSIT_READ,
    "members": Action.ORG_MEMBERS_READ,
    "studies": Action.STUDY_DECIDE,
}


OPENAPI = {
    "/lab": page_doc(get="the organisations you work for, and their sections"),
    "/lab/reviews": page_doc(
        get="pending requests of the organisations you review for, with the researchers' facts"
    ),
    "/lab/requests/{request_id}/decide": page_doc(
        "request_id", post="approve or deny a request (form: decision, comment, csrf_token)"
    ),
    "/lab/{org}/grants": page_doc("org", get="an organisation's grants, with revocation"),
    "/lab/grants/{grant_id}/revoke": page_doc("grant_id", post="revoke a grant at once"),
    "/lab/{org}/usage": page_doc(
        "org", get="hosted use of an organisation's models per grant and day (requests, tokens)"
    ),
    "/lab/{org}/deposits": page_doc(
        "org", get="an organisation's deposits and their verification"
    ),
    "/lab/{org}/members": page_doc(
        "org",
        get="an organisation's members and their roles",
        post="grant or take away a role (form: action, user, role, csrf_token)",
    ),
    "/lab/{org}/studies": page_doc(
        "org",
        query=("decided",),
        get="the studies of live use of an organisation's models (to its admins): the "
        "proposed ones to approve or reject, and the others",
    ),
    "/lab/studies/{study_id}/decide": page_doc(
        "study_id", post="approve or reject a proposed study (form: decision, note, csrf_token)"
    ),
}


@bp.get("/lab")
def overview() -> str:
    actor = person()
    sections = {org: [name for name, action in LAB_ACTIONS.items() if allowed(actor, action, org)]
                for org, _ in sorted(actor.org_roles)}
    sections = {org: names for org, names in sections.items() if names}
    if not sections:
        require_some_org(actor, Action.REVIEW_READ)  # raises the page naming the roles needed
    return render_template("lab/index.html", sections=sections, roles=actor.describe_roles())


# --- reviews ------------------------------------------------------------------------------------


@bp.get("/lab/reviews")
def reviews() -> str:
    actor = person()
    require_some_org(actor, Action.REVIEW_READ)
    policy_dir = escrow().settings.policy_dir
    with escrow().uow() as uow:
        orgs, pending = access.pending_reviews(uow, actor)
        described = [access.describe_request(uow, r, for_reviewer=True, policy_dir=policy_dir)
                     for r in pending]
        return render_template(
            "lab/reviews.html", orgs=orgs, requests=described, me=actor.id,
            decided=request.args.get("decided", ""), outcome=request.args.get("outcome", ""),
        )


@bp.post("/lab/requests/<request_id>/decide")
def decide(request_id: str) -> Response:
    actor = person()
    choice = request.form.get("decision")
    if choice not in ("approve", "deny"):
        raise BadRequest(f"decision must be approve or deny, not {str(choice)[:20]!r}",
                         hint="use the Approve or Deny button of the review page")
    with escrow().uow() as uow:
        decided, _ = access.decide(uow, actor, escrow().settings.policy_dir, request_id,
                                   choice == "approve", request.form.get("comment"))
        state = decided.state
    return redirect(f"/lab/reviews?decided={request_id}&outcome={state}", code=303)


# --- grants -------------------------------------------------------------------------------------


@bp.get("/lab/<org>/grants")
def org_grants(org: str) -> str:
    actor = person()
    require(actor, Action.GRANT_READ_ORG, org)
    policy_dir = escrow().settings.policy_dir
    with escrow().uow() as uow:
        found = closeouts.with_closeouts(
            uow,
            list(reversed(grants.org_grants(uow, actor, org))),
            escrow().settings.closeout_overdue_days,
        )
        researchers = {
            g["request_id"]: access.researcher_facts(
                uow, access.visible_request(uow, actor, g["request_id"]), policy_dir)
            for g in found
        }
        return render_template(
            "lab/grants.html", org=org, grants=found, researchers=researchers,
            may_revoke=allowed(actor, Action.GRANT_REVOKE, org),
            revoked=request.args.get("revoked", ""),
        )


@bp.post("/lab/grants/<grant_id>/revoke")
def revoke(grant_id: str) -> Response:
    actor = person()
    with escrow().uow() as uow:
        revoked = grants.revoke(uow, actor, grant_id)
        org = revoked.deposit.model.organisation.name
    return redirect(f"/lab/{org}/grants?revoked={grant_id}#{grant_id}", code=303)


@bp.get("/lab/<org>/usage")
def usage(org: str) -> str:
    actor = person()
    require(actor, Action.GRANT_READ_ORG, org)
    with escrow().uow() as uow:
        found = hosted_usage.org_usage(uow, actor, org)
    return render_template("lab/usage.html", org=org, usage=found)


# --- deposits and members -----------------------------------------------------------------------


@bp.get("/lab/<org>/deposits")
def deposits(org: str) -> str:
    actor = person()
    require(actor, Action.DEPOSIT_READ, org)
    with escrow().uow() as uow:
        found = catalog.org_deposits(uow, actor, org)
    return render_template("lab/deposits.html", org=org, deposits=found)


@bp.get("/lab/<org>/members")
def org_members(org: str) -> str:
    actor = person()
    require(actor, Action.ORG_MEMBERS_READ, org)
    with escrow().uow() as uow:
        found = members.list_members(uow, actor, org)
    return render_template(
        "lab/members.html", org=org, members=found,
        may_change=allowed(actor, Action.ORG_MEMBERS_WRITE, org),
        changed=request.args.get("changed", ""),
    )


@bp.post("/lab/<org>/members")
def change_member(org: str) -> Response:
    actor = person()
    form = request.form
    action = form.get("action")
    if action not in ("grant", "revoke"):
        raise BadRequest(f"action must be grant or revoke, not {str(action)[:20]!r}",
                         hint="use the buttons of the members page")
    with escrow().uow() as uow:
        members.set_member_role(uow, actor, org, form.get("user", "").strip(),
                                form.get("role", ""), action == "grant")
    return redirect(f"/lab/{org}/members?changed={action}", code=303)


# --- studies of live use ------------------------------------------------------------------------


@bp.get("/lab/<org>/studies")
def org_studies(org: str) -> str:
    actor = person()
    require(actor, Action.STUDY_DECIDE, org)
    with escrow().uow() as uow:
        found = studies.org_studies(uow, actor, org)
    decided = next((listed.study for listed in found
                    if listed.study["id"] == request.args.get("decided")
                    and listed.study["state"] != "proposed"), None)
    return render_template("lab/studies.html", org=org, studies=found, decided=decided)


@bp.post("/lab/studies/<study_id>/decide")
def decide_study(study_id: str) -> Response:
    actor = person()
    choice = request.form.get("decision")
    if choice not in ("approve", "reject"):
        raise BadRequest(f"decision must be approve or reject, not {str(choice)[:20]!r}",
                         hint="use the Approve or Reject button of the lab's studies page")
    with escrow().uow() as uow:
        decided = studies.decide(uow, actor, study_id, choice, request.form.get("note"))
    org = decided["model"].split("/", 1)[0]
    return redirect(f"/lab/{org}/studies?decided={decided['id']}#study-{decided['id']}",
                    code=303)
