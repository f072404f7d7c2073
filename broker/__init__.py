"""weights-escrow broker: the Flask app factory. Nothing is done at import time."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported on use: client commands must not pay for Flask at start-up
    from types import ModuleType

    from flask import Flask

    from broker.config import Settings


def create_app(settings: Settings | None = None) -> Flask:
    from flask import Flask

    from broker.adapters.oidc import init_oidc
    from broker.api import idempotency
    from broker.config import load_settings
    from broker.container import build_escrow
    from broker.http.common import check_request_values, register_error_handlers
    from broker.web import common as web_common
    from broker.web import csrf

    app = Flask(__name__)
    settings = settings or load_settings()
    app.extensions["escrow"] = build_escrow(settings)
    _configure(app, settings)
    register_error_handlers(app)
    app.before_request(check_request_values)  # first: path and query values, before any view
    idempotency.init_app(app)
    csrf.init_app(app)
    web_common.init_app(app)
    init_oidc(app, settings.oidc_issuers)
    modules = _route_modules()
    for module in modules:
        app.register_blueprint(module.bp)
    # One document, from the routes each registered blueprint declares (served by api/meta.py,
    # made on first use by broker.http.openapi.document_of)
    app.extensions["openapi_modules"] = modules
    return app


def _route_modules() -> tuple[ModuleType, ...]:
    """Every module with a blueprint `bp` (and its `OPENAPI` routes), in registration order: a new
    API or page module goes here, registered and described from this one list."""
    from broker.api import (
        access,
        agreements,
        audit,
        deposits,
        hosted,
        hosted_keys,
        keys,
        meta,
        ndas,
        oauth,
        orgs,
        quarantine,
        store_urls,
        studies,
    )
    from broker.api import models as api_models
    from broker.web import auth as web_auth
    from broker.web import device as web_device
    from broker.web import page_modules

    return (
        web_auth,
        meta,
        deposits,
        store_urls,
        keys,
        ndas,
        orgs,
        access,
        agreements,
        quarantine,
        audit,
        oauth,
        web_device,
        api_models,
        hosted,
        hosted_keys,
        studies,
        *page_modules(),
    )


def _configure(app: Flask, settings: Settings) -> None:
    """Request size limits and the session cookie."""
    from broker.container import read_secret_file
    from broker.http.common import MAX_BODY_BYTES

    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,  # refused with 413 before read; parts: their size
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        SECRET_KEY=read_secret_file(settings.session_secret_file),
        SESSION_COOKIE_NAME="escrow_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
    )
