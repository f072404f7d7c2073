"""Web login: OpenID Connect (`/auth/login` → provider → `/auth/callback`), logout, single-use
login links, and the person's own page (`/me`).

After a login the Flask session is cleared and holds only `login_session` (the LoginSession
id), so nothing from before the login (a pending state, a CSRF token) survives it. Every POST
here needs the session's CSRF token. Errors are HTML pages (problem+json for clients asking for
JSON); a failed login writes nothing and starts no session.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from broker.adapters.db.uow import UnitOfWork
from broker.adapters.oidc import PendingLogin, VerifiedLogin, oidc_providers, trusted_claims
from broker.domain.principals import Principal, PrincipalKind
from broker.errors import BadRequest, EscrowError
from broker.http.common import escrow, optional_caller
from broker.http.openapi import INTEGER, STRING, operation, path_params
from broker.services import hosted_keys, hosted_usage, keys, ndas, sessions, studies
from broker.services.people import Claims, describe_caller
from broker.web import csrf
from broker.web.common import identify_viewer, page_headers, render_error

bp = Blueprint("web_auth", __name__, template_folder="templates")
bp.before_request(identify_viewer)
bp.before_request(csrf.require)

PENDING_KEY = "oidc_login"
NEXT_KEY = "login_next"
DEFAULT_NEXT = "/me"
MAX_AGE_LIMIT_S = 86400

HTML = "text/html"
_QUERY = {"in": "query", "required": False}
OPENAPI = {
    "/auth/login": {
        "get": {
            **operation(
                "web login: redirect to the OpenID Provider, or choose one",
                auth=False,
                status="302",
                content_type=HTML,
            ),
            "parameters": [
                {"name": "provider", **_QUERY, "schema": STRING},
                {
                    "name": "next",
                    **_QUERY,
                    "schema": STRING,
                    "description": "a local path to return to (anything else is ignored)",
                },
                {
                    "name": "max_age",
                    **_QUERY,
                    "schema": INTEGER,
                    "description": "seconds: the provider must have authenticated you since",
                },
            ],
        }
    },
    "/auth/callback": {
        "get": operation(
            "the OpenID Provider's answer; starts a web session",
            auth=False,
            status="302",
            content_type=HTML,
        )
    },
    "/auth/logout": {
        "post": operation("end the web session (form with csrf_token)", content_type=HTML)
    },
    "/auth/link/{secret}": {
        "parameters": path_params("secret"),
        "get": operation(
            "a single-use login link: the page that confirms it", auth=False, content_type=HTML
        ),
        "post": operation(
            "log in with a single-use login link (form with csrf_token)",
            auth=False,
            status="302",
            content_type=HTML,
        ),
    },
    "/me": {
        "get": {
            **operation("the logged-in person's page", content_type=HTML),
            "parameters": [{"name": name, **_QUERY, "schema": STRING}
                           for name in ("revoked", "withdrawn")],
        }
    },
}


@bp.get("/auth/login")
def login() -> Response | str:
    providers = oidc_providers()
    next_path = safe_next(request.args.get("next"))
    max_age = _max_age(request.args.get("max_age"))
    name = request.args.get("provider")
    if name is None and len(providers.names) == 1:
        name = providers.names[0]
    if name is None:
        return render_template(
            "auth/choose.html", providers=providers.names, next=next_path, max_age=max_age
        )
    redirect_uri = escrow().settings.public_url + "/auth/callback"
    url, pending = providers.begin(name, redirect_uri, max_age)
    session[PENDING_KEY] = pending.to_session()
    session[NEXT_KEY] = next_path
    return redirect(url)


@bp.get("/auth/callback")
def callback() -> Response:
    # Taken out first: whatever happens next, this state cannot be used again.
    pending = PendingLogin.from_session(session.pop(PENDING_KEY, None))
    next_path = safe_next(session.pop(NEXT_KEY, None))
    verified = oidc_providers().finish(pending, request.args)
    return _signed_in(_record_login(verified), next_path)


@bp.post("/auth/logout")
def logout() -> str:
    login_session = session.get("login_session")
    if isinstance(login_session, str):
        with escrow().uow() as uow:
            sessions.logout(uow, login_session)
    session.clear()
    g.viewer = None  # the page says "logged out": no navigation of the ended login
    return render_template("auth/logged_out.html")


@bp.get("/auth/link/<secret>")
def link_page(secret: str) -> str:
    # A GET never uses the link up: mail scanners and chat previews fetch links.
    return render_template("auth/link.html")


@bp.post("/auth/link/<secret>")
def link_login(secret: str) -> Response:
    with escrow().uow() as uow:
        session_id = sessions.link_login(uow, secret)
    return _signed_in(session_id, DEFAULT_NEXT)


@bp.get("/me")
def me() -> Response | str:
    principal = optional_caller()
    if principal is None or principal.kind != PrincipalKind.USER:
        return redirect(url_for(".login", next=request.path))
    with escrow().uow() as uow:
        return render_me(uow, principal, revoked=request.args.get("revoked", ""),
                         withdrawn=request.args.get("withdrawn", ""))


def render_me(uow: UnitOfWork, principal: Principal, **extra: Any) -> str:
    """The person's page: identity, keys, NDA signatures, and hosted access (grants with
    today's use, API keys); `extra` for the page's notices (a key made: shown once)."""
    return render_template(
        "auth/me.html",
        me=describe_caller(uow, principal),
        keys=[keys.describe(k) for k in keys.list_keys(uow, principal)],
        signatures=[ndas.describe_signature(uow, s)
                    for s in ndas.my_signatures(uow, principal)],
        hosted=hosted_usage.my_hosted_grants(uow, principal),
        consents=studies.my_consents(uow, principal),
        api_keys=hosted_keys.list_keys(uow, principal)["keys"],
        key_prefix=hosted_keys.PREFIX,
        broker=escrow().settings.public_url,
        **extra,
    )


@bp.errorhandler(EscrowError)
def error_page(error: EscrowError) -> Response:
    return render_error(error)


bp.after_request(page_headers)


def safe_next(value: object) -> str:
    """`value` if it is a path on this site, else the default page (never off-site)."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return DEFAULT_NEXT
    if any(c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return DEFAULT_NEXT
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return DEFAULT_NEXT
    return value


def _max_age(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) > MAX_AGE_LIMIT_S:
        raise BadRequest(
            f"max_age must be a number of seconds from 0 to {MAX_AGE_LIMIT_S}, found {value!r}",
            hint="e.g. /auth/login?max_age=300 to require a login within the last 5 minutes",
        )
    return int(value)


def _record_login(verified: VerifiedLogin) -> str:
    """The user (created on first login), their claims, and a new web session, in one
    transaction with their audit events. Returns the LoginSession id."""
    trusted = trusted_claims(verified.provider, verified.claims)
    claims = Claims(
        email=trusted.email,
        email_verified=trusted.email_verified,
        name=trusted.name,
        affiliations=trusted.affiliations,
        raw=verified.raw,
    )
    with escrow().uow() as uow:
        return sessions.web_login(
            uow, verified.issuer, verified.subject, claims, verified.auth_time
        )


def _signed_in(login_session_id: str, next_path: str) -> Response:
    # A fresh session (nothing from before the login carries over), holding only the login.
    session.clear()
    session["login_session"] = login_session_id
    return redirect(next_path)
