"""What every HTML page shares: who is logged in, role checks through `authorize`, error pages,
security headers, and how times, durations and sizes are shown.

Pages decide nothing about access themselves: `require` and `allowed` ask
`broker.domain.access.authorize`, and the services they call ask it again. What this module adds
is the way a refusal looks in a browser: a page saying which role is needed (403), or the login
page for someone not logged in, never a stack trace.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Flask, Response, g, redirect, render_template, request
from markupsafe import Markup
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from broker.adapters.db.uow import database_unavailable
from broker.domain.access import RULES, Action, GlobalRole, OrgRole, audit_scope, authorize
from broker.domain.clock import now
from broker.domain.principals import Principal, PrincipalKind
from broker.domain.units import human_bytes
from broker.errors import EscrowError, Forbidden, Unauthorized
from broker.http.common import optional_caller, problem
from broker.http.openapi import operation, path_params
from broker.web import csrf

log = logging.getLogger(__name__)
HTML = "text/html"

# Progressive enhancement: every <time> is rendered in UTC by the server; this rewrites its text
# in the reader's time zone and keeps the UTC value in the title (shown on hover). Without
# JavaScript the UTC text stays, which is still correct.
LOCAL_TIME_SCRIPT = """
document.querySelectorAll("time[datetime]").forEach(function (el) {
  var when = new Date(el.getAttribute("datetime"));
  if (isNaN(when.getTime())) { return; }
  el.textContent = when.toLocaleString(undefined, {year: "numeric", month: "short",
    day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short"});
  el.setAttribute("data-localised", "");
});
"""
# The page's only script, allowed by its hash: no inline script another party injects can run.
SCRIPT_HASH = base64.b64encode(hashlib.sha256(LOCAL_TIME_SCRIPT.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{SCRIPT_HASH}'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class LoginRequired(Unauthorized):
    """A page for people logged in, opened without a login: the browser goes to log in."""


class RoleRequired(Forbidden):
    """`authorize` refused; `needed` says in words which role would allow it."""

    def __init__(self, message: str, *, hint: str, needed: str) -> None:
        super().__init__(message, hint=hint)
        self.needed = needed


# --- who is asking, and may they ---------------------------------------------------------------


def person() -> Principal:
    """The person logged in (the browser's login session, or a person's bearer token)."""
    principal = optional_caller()
    if principal is None or principal.kind != PrincipalKind.USER:
        raise LoginRequired(
            "this page is for people logged in", hint="log in with your institution's account"
        )
    return principal


def require(actor: Principal, action: Action, org: str | None = None) -> None:
    """`authorize`, turning a refusal into a page that names the role needed."""
    try:
        authorize(actor, action, org)
    except Forbidden as refused:
        raise RoleRequired(
            refused.message, hint=refused.hint, needed=needed_role(action, org)
        ) from None


def allowed(actor: Principal | None, action: Action, org: str | None = None) -> bool:
    """Whether `authorize` allows it (for links and buttons; the action checks again)."""
    if actor is None:
        return False
    try:
        authorize(actor, action, org)
    except EscrowError:
        return False
    return True


def orgs_allowed(actor: Principal, action: Action) -> list[str]:
    """The organisations the actor has a role in where `authorize` allows `action`."""
    return sorted({org for org, _ in actor.org_roles if allowed(actor, action, org)})


def require_some_org(actor: Principal, action: Action) -> list[str]:
    """`orgs_allowed`, or the 403 page when there is none."""
    orgs = orgs_allowed(actor, action)
    if not orgs:
        needed = needed_role(action, None)
        raise RoleRequired(
            f"this page needs {needed}, and you hold it in none",
            hint="an admin of the organisation (or an operator) grants it: "
            "escrow admin role grant YOUR_EMAIL ROLE --org ORG",
            needed=needed,
        )
    return orgs


def needed_role(action: Action, org: str | None) -> str:
    """The role `action` needs, in words, read from the one table of rules."""
    rule = RULES.get(action)
    if isinstance(rule, GlobalRole):
        return f"the global role {' or '.join(rule.roles)}"
    if isinstance(rule, OrgRole):
        where = f"organisation {org}" if org else "an organisation"
        also = " (or the global role operator)" if rule.operators_too else ""
        return f"the role {' or '.join(rule.roles)} in {where}{also}"
    return "a person logged in"


# --- how pages are described in the OpenAPI document ------------------------------------------


def page_doc(
    *params: str,
    public: bool = False,
    query: tuple[str, ...] = (),
    post_status: str = "303",
    **methods: str,
) -> dict[str, Any]:
    """The OpenAPI path item of a page: `get=` / `post=` summaries (a form answers 303 unless
    `post_status` says otherwise), its path parameters and optional query parameters."""
    item: dict[str, Any] = {}
    for method, summary in methods.items():
        status = post_status if method == "post" else "200"
        item[method] = operation(summary, status=status, content_type=HTML, auth=not public)
        if query:
            item[method]["parameters"] = [
                {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                for name in query
            ]
    if params:
        item["parameters"] = path_params(*params)
    return item


# --- errors as pages ---------------------------------------------------------------------------


def error_page(error: Exception) -> WerkzeugResponse:
    """Every error of a page blueprint: the login page, or a page saying what happened."""
    if isinstance(error, HTTPException):
        code, name = error.code or 400, (error.name or "error").lower()
        error = EscrowError(error.description or name, hint="")
        error.status, error.title = code, name
    elif isinstance(error, OperationalError):
        error = database_unavailable(error)
        log.warning("%s: %s", error.title, error.message)
    elif not isinstance(error, EscrowError):
        log.exception("unexpected error on page %s", request.path)
        error = EscrowError(
            "the broker failed unexpectedly",
            hint="retry; if it persists, tell the operator (details are in the server log)",
        )
    if isinstance(error, LoginRequired) and request.method == "GET":
        return redirect("/auth/login?next=" + quote(request.full_path.rstrip("?"), safe="/"))
    return render_error(error)


def render_error(error: EscrowError) -> Response:
    wanted = request.accept_mimetypes.best_match(
        [HTML, "application/json", "application/problem+json"]
    )
    if wanted != HTML:
        return problem(error.status, error.title, error.message, error.hint)
    response = Response(render_template("error.html", error=error), status=error.status)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="weights-escrow"'
    return response


def page_headers(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"  # pages carry personal data and tokens
    response.headers["Referrer-Policy"] = "no-referrer"  # login links carry their secret
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def page_blueprint(name: str, import_name: str, **options: Any) -> Blueprint:
    """A blueprint of pages: CSRF on every form, the security headers, errors as pages."""
    bp = Blueprint(name, import_name, template_folder="templates", **options)
    bp.before_request(identify_viewer)
    bp.before_request(csrf.require)
    bp.after_request(page_headers)
    bp.register_error_handler(Exception, error_page)
    return bp


# --- how things are shown ----------------------------------------------------------------------


def parse_time(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) \
        else value
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def time_tag(value: datetime | str | None, missing: str = "never") -> Markup:
    """A <time> in UTC (text and title); the page's script shows it in the reader's zone."""
    moment = parse_time(value)
    if moment is None:
        return Markup('<span class="muted">{}</span>').format(missing)
    iso = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    return Markup('<time datetime="{}" title="{} UTC">{}</time>').format(
        iso, moment.strftime("%Y-%m-%d %H:%M:%S"), moment.strftime("%Y-%m-%d %H:%M UTC")
    )


def time_left(value: datetime | str | None, moment: datetime | None = None) -> str:
    """"12 days left", "5 hours left", "40 minutes left", or "expired"."""
    end = parse_time(value)
    if end is None:
        return ""
    seconds = (end - (moment or now())).total_seconds()
    if seconds <= 0:
        return "expired"
    if seconds >= 36 * 3600:  # from a day and a half, whole days read best
        return f"{round(seconds / 86400)} days left"
    if seconds >= 2 * 3600:
        return f"{round(seconds / 3600)} hours left"
    if seconds >= 120:
        return f"{round(seconds / 60)} minutes left"
    return "less than 2 minutes left"


def roles_words(roles: dict[str, Any]) -> str:
    """`Principal.describe_roles()` as words: "reviewer and admin in acme-ai; auditor"."""
    held = [f"{' and '.join(names)} in {org}" for org, names in roles["orgs"].items()]
    held += list(roles["global"])
    return "; ".join(held) or "none"


def identify_viewer() -> None:
    """`before_request` of page blueprints: who is browsing, for the navigation. Resolved
    before the view opens its transaction, never while rendering: on SQLite every transaction
    takes the write lock (BEGIN IMMEDIATE), so a second one in the same request would wait for
    the first."""
    try:
        g.viewer = optional_caller()
    except EscrowError:  # a page about a failure must still render
        g.viewer = None


def navigation() -> dict[str, Any]:
    """The viewer and the sections they can open (links only; each page checks again)."""
    viewer = g.get("viewer")
    if viewer is None or viewer.kind != PrincipalKind.USER:
        return {"viewer": None, "sections": []}
    lab_actions = (
        Action.REVIEW_READ,
        Action.DEPOSIT_READ,
        Action.ORG_MEMBERS_READ,
        Action.GRANT_READ_ORG,
    )
    sections = [("My access", "/requests"), ("Profile", "/me")]
    if any(orgs_allowed(viewer, action) for action in lab_actions):
        sections.append(("Lab", "/lab"))
    if allowed(viewer, Action.HEALTH_READ):
        sections.append(("Operator", "/operator"))
    if audit_scope(viewer).everything:  # who may read the whole log: the domain decides
        sections.append(("Audit", "/audit"))
    return {"viewer": viewer, "sections": sections}


def init_app(app: Flask) -> None:
    app.jinja_env.filters["when"] = time_tag
    app.jinja_env.filters["time_left"] = time_left
    app.jinja_env.filters["size"] = human_bytes
    app.jinja_env.filters["roles"] = roles_words
    # A constant of this module, never data: safe to emit unescaped (its hash is in the CSP).
    app.jinja_env.globals["local_time_script"] = Markup(LOCAL_TIME_SCRIPT)  # noqa: S704
    app.context_processor(lambda: {"nav": navigation()})
