"""Helpers the adapter tests share: a hand-moved clock, a local store, a store-URL app."""

from __future__ import annotations

import secrets
import types
from pathlib import Path

from flask import Flask

from broker.adapters.objectstore.local import LocalStore


class Clock:
    """A clock the test moves by hand (for URL expiry without sleeping)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_local_store(base: Path, url_base: str, clock: Clock) -> LocalStore:
    return LocalStore(
        base / "objects", base / "staging", url_base, secrets.token_bytes(32), clock=clock
    )


def make_store_app(store: object) -> Flask:
    """The smallest app serving store URLs: the blueprint, the error handlers, the store."""
    from broker.api import store_urls
    from broker.http.common import register_error_handlers

    app = Flask("store-urls-test")
    app.config["TESTING"] = True
    app.extensions["escrow"] = types.SimpleNamespace(store=store)
    register_error_handlers(app)
    app.register_blueprint(store_urls.bp)
    return app
