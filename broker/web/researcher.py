"""The researcher's pages: read and sign an NDA, request access to a model version (with what
the policy still misses), and follow one's requests and grants (withdraw, renew, fetch).

Views only translate: parse the form, call the service (which authorizes), render or redirect.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import redirect, render_template, request
from werkzeug.wrappers import Response

from broker.adapters.db.uow import UnitOfWork
from broker.domain.hosting import WEIGHTS
from broker.domain.principals import Principal, PrincipalKind
from broker.errors import ConfigError, Conflict, EscrowError, Forbidden, InvalidInput, Unavailable
from broker.http.common import escrow, optional_caller
from broker.services import access, catalog, grants, hosted_chat, hosted_keys, keys, ndas
from broker.services.hosted_usage import QuotaExceeded
from broker.web.auth import render_me, safe_next
from broker.web.common import page_blueprint, page_doc, person

bp = page_blueprint("web_researcher", __name__)

OPENAPI = {
    "/ndas/{nda_id}": page_doc(
        "nda_id",
        public=True,
        query=("version", "next"),
        get="an NDA text to read; logged in: its signature status and the form to sign",
    ),
    "/ndas/{nda_id}/sign": page_doc(
        "nda_id",
        post="sign the NDA text shown (form: version, sha256, typed_name, accept, csrf_token)",
    ),
    "/request/{org}/{model}/{version}": page_doc(
        "org",
        "model",
        "version",
        query=("days", "kind"),
        get="request access to a model version (of a kind the policy allows: weights, "
        "inference, internals): what the policy still misses, and the form",
        post="make the request (form: purpose, days, key_id, kind, csrf_token)",
    ),
    "/requests": page_doc(get="your requests and grants, with time left and the fetch command"),
    "/requests/{request_id}/withdraw": page_doc("request_id", post="withdraw a pending request"),
    "/grants/{grant_id}/renew": page_doc("grant_id", post="ask to renew an active grant"),
    "/me/hosted-keys": page_doc(
        post_status="200",
        post="make an API key of one of your inference grants, shown once on the page that "
        "answers (form: grant_id, csrf_token)"
    ),
    "/me/hosted-keys/{key_id}/revoke": page_doc("key_id", post="revoke one of your API keys"),
    "/me/chat/{grant_id}": page_doc(
        "grant_id",
        post_status="200",
        get="talk to the version of one of your inference grants (greedy decoding)",
        post="one turn: the model's answer to your message (form: message, max_tokens, "
        "conversation, csrf_token); the conversation is carried by the page, not stored",
    ),
}


# --- NDAs -------------------------------------------------------------------------------------


@bp.get("/ndas/<nda_id>")
def nda(nda_id: str) -> str:
    texts = ndas.library(escrow().settings.policy_dir)
    text = texts.get(nda_id, request.args.get("version") or None)
    viewer = optional_caller()
    signature = None
    if viewer is not None and viewer.kind == PrincipalKind.USER:
        with escrow().uow() as uow:
            found = ndas.signature_of(uow, int(viewer.id), text)
            signature = ndas.describe_signature(uow, found) if found else None
    return render_template(
        "researcher/nda.html",
        text=text,
        versions=texts.versions(nda_id),
        viewer=viewer,
        signature=signature,
        next=safe_next(request.args.get("next")) if request.args.get("next") else "",
    )


@bp.post("/ndas/<nda_id>/sign")
def sign_nda(nda_id: str) -> Response:
    actor = person()
    form = request.form
    if form.get("accept") != "yes":
        raise InvalidInput(
            "to sign, tick the box saying that you have read and accept the agreement",
            hint="go back, read the text, tick the box and sign again",
        )
    texts = ndas.library(escrow().settings.policy_dir)
    with escrow().uow() as uow:
        signature, _ = ndas.sign(
            uow, actor, texts, nda_id, form.get("version"), form.get("sha256"),
            form.get("typed_name"), ip=request.remote_addr, user_agent=request.user_agent.string,
        )
        version = signature.nda_version
    if form.get("next"):
        return redirect(safe_next(form.get("next")), code=303)
    return redirect(f"/ndas/{nda_id}?version={version}", code=303)


# --- asking for access --------------------------------------------------------------------------


@bp.get("/request/<org>/<model>/<version>")
def request_form(org: str, model: str, version: str) -> str:
    actor = person()
    days = _days(request.args.get("days"))
    kind = request.args.get("kind") or None
    with escrow().uow() as uow:
        return _render_request(uow, actor, f"{org}/{model}", version, days, kind)


@bp.post("/request/<org>/<model>/<version>")
def make_request(org: str, model: str, version: str) -> Response | tuple[str, int]:
    actor = person()
    name, form = f"{org}/{model}", request.form
    days = _days(form.get("days"))
    kind = form.get("kind") or None
    policy_dir = escrow().settings.policy_dir
    try:
        with escrow().uow() as uow:
            made = access.create_request(
                uow, actor, policy_dir, name, version, form.get("purpose"), days,
                form.get("key_id") or None, kind,
            )
            made_id = made.id
    except access.RequestRefused as refused:
        return _rerender(actor, name, version, days, kind, refused, refused=refused.request.id)
    except (InvalidInput, Conflict) as problem:  # the form stays filled in, the problem shown
        return _rerender(actor, name, version, days, kind, problem)
    return redirect(f"/requests?made={made_id}#{made_id}", code=303)


def _rerender(
    actor: Principal, name: str, version: str, days: object, kind: str | None, problem: Any,
    refused: str = "",
) -> tuple[str, int]:
    with escrow().uow() as uow:
        page = _render_request(uow, actor, name, version, days, kind, problem=problem,
                               refused=refused)
    return page, problem.status


def _render_request(
    uow: UnitOfWork, actor: Principal, name: str, version: str, days: object,
    kind: str | None = None, **extra: Any
) -> str:
    """The request page for one kind of access (weights unless named): the policy's decision
    on it now, and the form."""
    policy_dir = escrow().settings.policy_dir
    try:
        explained = access.explain(uow, actor, policy_dir, name, version, days, kind=kind)
    except InvalidInput:  # a kind that is no kind: the page for weights, which says so
        if kind is None or kind == WEIGHTS:
            raise
        kind = None
        explained = access.explain(uow, actor, policy_dir, name, version, days)
    policy = catalog.policy_of(policy_dir, name)
    nda_status = None
    if policy and policy["nda"]:
        nda_text = ndas.library(policy_dir).get(policy["nda"]["id"])
        nda_status = {"id": nda_text.id, "version": nda_text.version,
                      "signed": ndas.has_signed(uow, int(actor.id), nda_text)}
    my_keys = [keys.describe(k) for k in keys.list_keys(uow, actor)]
    return render_template(
        "researcher/request.html",
        explained=explained,
        policy=policy,
        nda=nda_status,
        proven=[k for k in my_keys if k["state"] == "proven"],
        pending_keys=[k for k in my_keys if k["state"] == "pending"],
        form=request.form,
        days=days if isinstance(days, int) else None,
        kind=kind or WEIGHTS,
        **extra,
    )


def _days(value: str | None) -> object:
    """A whole number from the form, or the text as typed for the service to refuse clearly."""
    if value is None or not value.strip():
        return None
    return int(value) if value.strip().isdigit() else value


# --- my requests and grants ---------------------------------------------------------------------


@bp.get("/requests")
def my_access() -> str:
    actor = person()
    policy_dir = escrow().settings.policy_dir
    with escrow().uow() as uow:
        made = sorted(
            access.my_requests(uow, actor), key=lambda r: (-r.created_at.timestamp(), r.id)
        )  # newest first
        held = [grants.describe(uow, g) for g in reversed(grants.my_grants(uow, actor))]
        renewable = {g["model"]: _renewable(policy_dir, g["model"]) for g in held}
        return render_template(
            "researcher/requests.html",
            requests=[access.describe_request(uow, r) for r in made],
            grants=held,
            renewable=renewable,
            made=request.args.get("made", ""),
            withdrawn=request.args.get("withdrawn", ""),
            broker=escrow().settings.public_url,
        )


@bp.post("/requests/<request_id>/withdraw")
def withdraw(request_id: str) -> Response:
    actor = person()
    with escrow().uow() as uow:
        access.withdraw(uow, actor, request_id)
    return redirect(f"/requests?withdrawn={request_id}#{request_id}", code=303)


@bp.post("/grants/<grant_id>/renew")
def renew(grant_id: str) -> Response:
    actor = person()
    try:
        with escrow().uow() as uow:
            made = access.request_renewal(uow, actor, escrow().settings.policy_dir, grant_id)
            made_id = made.id
    except access.RequestRefused as refused:
        made_id = refused.request.id  # on the record as denied, with what is missing
    return redirect(f"/requests?made={made_id}#{made_id}", code=303)


def _renewable(policy_dir: Path, model: str) -> bool:
    """Whether to offer a Renew button (the service decides again when it is pressed)."""
    try:
        policy = catalog.policy_of(policy_dir, model)
    except ConfigError:  # a broken policy directory: no button, the page still shows
        return False
    return bool(policy and policy["grant"]["renewal"])


# --- API keys of hosted access (shown on /me) ---------------------------------------------------


@bp.post("/me/hosted-keys")
def create_hosted_key() -> str:
    """The new key is on the page this POST answers, once (never in a URL, never again)."""
    actor = person()
    with escrow().uow() as uow:
        made = hosted_keys.create(uow, actor, request.form.get("grant_id"))
        return render_me(uow, actor, created=made)


@bp.post("/me/hosted-keys/<key_id>/revoke")
def revoke_hosted_key(key_id: str) -> Response:
    actor = person()
    with escrow().uow() as uow:
        hosted_keys.revoke(uow, actor, key_id)
    return redirect(f"/me?revoked={key_id}#hosted-keys", code=303)


# --- the chat page of a hosted grant ------------------------------------------------------------


@bp.get("/me/chat/<grant_id>")
def chat(grant_id: str) -> str:
    actor = person()
    model, kind = hosted_chat.grant_model(escrow(), actor, grant_id)
    return render_template("researcher/chat.html", grant_id=grant_id, model=model, kind=kind,
                           turns=[], conversation="[]", max_tokens="",
                           default_tokens=hosted_chat.DEFAULT_TOKENS,
                           longest_tokens=hosted_chat.MAX_TOKENS)


@bp.post("/me/chat/<grant_id>")
def chat_turn(grant_id: str) -> tuple[str, int]:
    actor = person()
    model, kind = hosted_chat.grant_model(escrow(), actor, grant_id)
    turns = hosted_chat.conversation(request.form.get("conversation"))
    problem: EscrowError | None = None
    try:
        turns = hosted_chat.reply(escrow(), actor, grant_id, turns, request.form.get("message"),
                                  request.form.get("max_tokens"))
    except (InvalidInput, Forbidden, QuotaExceeded, Unavailable) as refused:
        problem = refused  # the conversation so far stays on the page, the problem shown
    page = render_template(
        "researcher/chat.html", grant_id=grant_id, model=model, kind=kind, turns=turns,
        conversation=json.dumps(turns), problem=problem,
        message=request.form.get("message", "") if problem else "",
        max_tokens=request.form.get("max_tokens", ""),
        default_tokens=hosted_chat.DEFAULT_TOKENS, longest_tokens=hosted_chat.MAX_TOKENS,
    )
    return page, problem.status if problem else 200
