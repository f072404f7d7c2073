"""CSRF protection for requests a browser's cookie authenticates.

A per-session random token lives in the (signed) session cookie and is sent back in a form field
`csrf_token` or an `X-CSRF-Token` header; it is compared in constant time. Checked on every
unsafe method (POST, PUT, PATCH, DELETE):

- of a request the session cookie authenticates (it carries a login session), API writes too;
- of every HTML form (`require` as a blueprint's `before_request`), logged in or not: a form
  that logs someone in must not be posted by another site either (login CSRF).

A request that presents `Authorization: Bearer …` is authenticated by that token alone (the
cookie is not looked at), and another site cannot make a browser send such a header, so it
needs no CSRF token.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, request, session

from broker.errors import Forbidden

SESSION_KEY = "csrf_token"
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def csrf_token() -> str:
    """This session's token, made on first use (a Jinja global: `{{ csrf_token() }}`)."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)  # 256 bits: unguessable by another site
        session[SESSION_KEY] = token
    return token


def check() -> None:
    """Refuse the request unless it carries this session's token."""
    expected = session.get(SESSION_KEY)
    presented = request.headers.get(HEADER) or request.form.get(FORM_FIELD) or ""
    if not isinstance(expected, str) or not hmac.compare_digest(
        expected.encode(), presented.encode()
    ):
        raise Forbidden(
            "csrf: this form or call does not carry this session's CSRF token",
            hint="reload the page and submit again; scripts using the session cookie send the "
            f"token in the {HEADER} header (or use a bearer token instead)",
        )


def require() -> None:
    """`before_request` of HTML blueprints: every unsafe request needs the token."""
    if request.method in UNSAFE_METHODS:
        check()


def protect_cookie_requests() -> None:
    """`before_request` of the app: unsafe requests the session cookie authenticates."""
    if request.method not in UNSAFE_METHODS or _bearer():
        return
    if "login_session" in session:
        check()


def init_app(app: Flask) -> None:
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.before_request(protect_cookie_requests)


def _bearer() -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token)
