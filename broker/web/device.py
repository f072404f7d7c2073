"""`/device`: where a person approves (or denies) a CLI login in their browser (RFC 8628 §3.3).

The browser must be logged in (its cookie's login session); the page shows what is being
approved (the client, when the login was asked for, the code) so that the person can check it
against their terminal. Approving starts a "device" login session for that person, with the
browser login's issuer and auth_time. Forms carry the session's CSRF token, and the pages may
not be framed, so another site can neither post nor click "Approve" for the person.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from flask import Blueprint, make_response, redirect, render_template, request, session
from werkzeug.wrappers import Response

from broker.errors import BadRequest, EscrowError
from broker.http.common import escrow
from broker.http.openapi import PAGE_PROBLEM
from broker.services import device as service
from broker.services.sessions import now
from broker.web import csrf
from broker.web.common import identify_viewer

bp = Blueprint("device", __name__, template_folder="templates")
bp.before_request(identify_viewer)  # the navigation's viewer, before any transaction opens
bp.before_request(csrf.require)  # templates get `csrf_token()` from csrf.init_app

HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}
OPENAPI = {
    "/device": {
        "get": {
            "summary": "the page where a logged-in person enters or checks a CLI login code "
            "(redirects to /auth/login when the browser is not logged in)",
            "security": [],
            "parameters": [
                {
                    "name": "user_code",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "200": {"description": "HTML", **HTML},
                "302": {"description": "to /auth/login"},
                "default": PAGE_PROBLEM,
            },
        },
        "post": {
            "summary": "approve or deny a CLI login code (form: user_code, action, csrf_token)",
            "security": [],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "user_code": {"type": "string"},
                                "action": {"enum": ["approve", "deny"]},
                                "csrf_token": {"type": "string"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {"description": "HTML", **HTML},
                "302": {"description": "to /auth/login"},
                "default": PAGE_PROBLEM,
            },
        },
    }
}


@bp.get("/device")
def enter_code() -> Response:
    typed = request.args.get("user_code", "").strip()
    with escrow().uow() as uow:
        browser = service.browser_login(uow, session.get("login_session"))
        if browser is None:
            return _to_login(typed)
        if not typed:
            return _page("device.html", 200, typed="", error=None)
        try:
            grant = service.waiting(uow, typed)
        except EscrowError as error:
            return _page("device.html", error.status, typed=typed, error=error)
        age_s = max(0, int((now() - grant.created_at).total_seconds()))
        return _page(
            "device_confirm.html", 200, grant=grant, asked_s_ago=age_s, who=service.who(browser)
        )


@bp.post("/device")
def answer() -> Response:
    typed = request.form.get("user_code", "")
    action = request.form.get("action", "")
    with escrow().uow() as uow:
        browser = service.browser_login(uow, session.get("login_session"))
        if browser is None:
            return _to_login(typed)
        who = service.who(browser)
        try:
            if action == "approve":
                service.approve(uow, typed, browser)
            elif action == "deny":
                service.deny(uow, typed, browser)
            else:
                raise BadRequest(
                    f"action {action[:20]!r} is neither approve nor deny",
                    hint="use the buttons of the page",
                )
        except EscrowError as error:
            return _page("device.html", error.status, typed=typed, error=error)
    return _page("device_done.html", 200, approved=action == "approve", who=who)


def _to_login(typed: str) -> Response:
    target = "/device" + (f"?{urlencode({'user_code': typed})}" if typed else "")
    return redirect("/auth/login?next=" + quote(target, safe=""))


def _page(template: str, status: int, **context: object) -> Response:
    response = make_response(render_template(template, **context), status)
    # Not framed: another site must not overlay the Approve button (clickjacking).
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    response.headers["Cache-Control"] = "no-store"
    return response
