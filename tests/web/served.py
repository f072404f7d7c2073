"""The broker served over real HTTP for tests that need a browser or an OpenID Provider: werkzeug
in a thread, on a loopback socket bound before (so that its callback URL can be registered at
the provider first). Each test mounts its own app on it. Shared by tests/web and tests/browser,
which import it as `web.served`."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from werkzeug.serving import make_server

from broker.config import OidcIssuer, _oidc_issuers


@dataclass
class WebBroker:
    """The broker's address for the whole session; each test mounts its own app on it."""

    url: str
    app: object | None = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


@contextlib.contextmanager
def serve(listener: socket.socket) -> Iterator[WebBroker]:
    port = listener.getsockname()[1]
    broker = WebBroker(f"http://127.0.0.1:{port}")
    server = make_server("127.0.0.1", port, broker, threaded=True, fd=listener.fileno())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield broker
    finally:
        server.shutdown()
        server.server_close()


def issuer_config(provider, name: str = "uni") -> OidcIssuer:
    """How an operator would configure the test provider, with the documented ESCROW_OIDC_*
    variables: authoritative for uni.example. No ESCROW_OIDC_SCOPES: the broker asks for the
    affiliation scope itself because affiliation scopes are set (the provider releases
    eduperson_scoped_affiliation only under that scope)."""
    (issuer,) = _oidc_issuers(
        {
            "ESCROW_OIDC_NAME": name,
            "ESCROW_OIDC_ISSUER": provider.issuer,
            "ESCROW_OIDC_CLIENT_ID": provider.client.client_id,
            "ESCROW_OIDC_CLIENT_SECRET": provider.client.client_secret,
            "ESCROW_OIDC_EMAIL_DOMAINS": "uni.example",
            "ESCROW_OIDC_AFFILIATION_SCOPES": "uni.example",
        },
        None,
    )
    return issuer
