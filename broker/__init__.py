"""weights-escrow broker: the Flask app factory. Nothing is done at import time."""

from __future__ import annotations

from flask import Flask

from broker.config import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    from broker.api import deposits, meta, store_urls
    from broker.api.common import register_error_handlers
    from broker.container import build_escrow

    app = Flask(__name__)
    settings = settings or load_settings()
    app.extensions["escrow"] = build_escrow(settings)
    app.config["MAX_FORM_MEMORY_SIZE"] = 1024 * 1024
    register_error_handlers(app)
    app.register_blueprint(meta.bp)
    app.register_blueprint(deposits.bp)
    app.register_blueprint(store_urls.bp)
    return app
