"""weights-escrow broker: the Flask app factory. Nothing is done at import time."""

from __future__ import annotations

from flask import Flask

from broker.config import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    from broker.api import deposits, meta, orgs, store_urls
    from broker.api.common import register_error_handlers
    from broker.container import build_escrow, read_secret_file

    app = Flask(__name__)
    settings = settings or load_settings()
    app.extensions["escrow"] = build_escrow(settings)
    app.config.update(
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        SECRET_KEY=read_secret_file(settings.session_secret_file),
        SESSION_COOKIE_NAME="escrow_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
    )
    register_error_handlers(app)
    app.register_blueprint(meta.bp)
    app.register_blueprint(deposits.bp)
    app.register_blueprint(store_urls.bp)
    app.register_blueprint(orgs.bp)
    return app
