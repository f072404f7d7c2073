"""Web login fixtures: the broker served over real HTTP (werkzeug in a thread, on the socket the
OpenID Providers know as its callback), and a browser-like client that logs in through the
provider's own login and consent pages."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin

import pytest
import requests
from werkzeug.serving import make_server

from broker.config import OidcIssuer

SCOPES = "openid email profile eduperson_scoped_affiliation"
TIMEOUT_S = 10


@dataclass
class WebBroker:
    """The broker's address for the whole session; each test mounts its own app on it."""

    url: str
    app: object | None = None

    def __call__(self, environ, start_response):  # noqa: ANN001, ANN204
        return self.app(environ, start_response)


@pytest.fixture(scope="session")
def web_broker(web_listener) -> Iterator[WebBroker]:  # noqa: ANN001
    port = web_listener.getsockname()[1]
    broker = WebBroker(f"http://127.0.0.1:{port}")
    server = make_server("127.0.0.1", port, broker, threaded=True, fd=web_listener.fileno())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield broker
    server.shutdown()
    server.server_close()


def issuer_config(provider, name: str = "uni") -> OidcIssuer:  # noqa: ANN001
    """How an operator would configure the test provider: authoritative for uni.example."""
    return OidcIssuer(
        name=name,
        issuer=provider.issuer,
        client_id=provider.client.client_id,
        client_secret=provider.client.client_secret,
        email_domains=("uni.example",),
        affiliation_scopes=("uni.example",),
        scopes=SCOPES,
    )


@pytest.fixture
def mount(escrow, web_broker, oidc_provider) -> Iterator[Callable[..., object]]:  # noqa: ANN001
    """`mount(uni=provider, ...)` serves a broker app configured with these providers, each
    under its name."""
    from broker import create_app

    apps = []

    def _mount(**providers):  # noqa: ANN003, ANN202
        issuers = tuple(issuer_config(p, name) for name, p in providers.items())
        settings = escrow.settings.with_overrides(public_url=web_broker.url, oidc_issuers=issuers)
        app = create_app(settings)
        apps.append(app)
        web_broker.app = app
        return app

    yield _mount
    web_broker.app = None
    oidc_provider.tamper("")
    for app in apps:
        app.extensions["escrow"].engine.dispose()


@pytest.fixture
def login_app(mount, oidc_provider):  # noqa: ANN001, ANN201
    """The broker with one provider: the test provider, named "uni"."""
    return mount(uni=oidc_provider)


@dataclass
class Browser:
    """A browser-like HTTP client: a cookie jar, redirects followed by hand so that a test can
    stop at, inspect, alter or replay any hop."""

    broker: str
    http: requests.Session = field(default_factory=requests.Session)

    def get(self, url: str, **kwargs) -> requests.Response:  # noqa: ANN003
        return self.http.get(urljoin(self.broker, url), allow_redirects=False,
                             timeout=TIMEOUT_S, **kwargs)

    def post(self, url: str, **kwargs) -> requests.Response:  # noqa: ANN003
        return self.http.post(urljoin(self.broker, url), allow_redirects=False,
                              timeout=TIMEOUT_S, **kwargs)

    def to_provider(self, start: str = "/auth/login", account: str = "ada",
                    abort: bool = False) -> str:
        """Start a login at the broker and go through the provider's pages as `account` (or
        cancel there); return the callback URL the provider sends back, not yet visited."""
        response = self.get(start)
        for _ in range(20):
            if response.status_code == 200:  # one of the provider's interaction pages
                response = self._interact(response, account, abort)
                continue
            assert response.status_code in (302, 303), (response.status_code, response.text)
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith(self.broker + "/auth/callback"):
                return location
            response = self.get(location)
        raise AssertionError("the login did not come back to the broker")

    def _interact(self, page: requests.Response, account: str, abort: bool) -> requests.Response:
        if abort:
            link = re.search(r'href="([^"]*/abort)"', page.text)
            assert link, page.text
            return self.get(urljoin(page.url, link[1]))
        action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
        prompt = re.search(r'name="prompt" value="(\w+)"', page.text)
        assert action and prompt, page.text
        data = {"prompt": prompt[1]}
        if prompt[1] == "login":
            data |= {"login": account, "password": "anything"}
        return self.post(urljoin(page.url, action[1]), data=data)

    def login(self, account: str = "ada", start: str = "/auth/login") -> requests.Response:
        """A whole login; answers the broker's response to the callback (a redirect)."""
        return self.get(self.to_provider(start, account))

    def csrf_token(self, page: str = "/me") -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', self.get(page).text)
        assert found, f"no CSRF token on {page}"
        return found[1]

    def logout(self) -> requests.Response:
        return self.post("/auth/logout", data={"csrf_token": self.csrf_token()})

    def me(self) -> requests.Response:
        return self.get("/api/v1/me", headers={"Accept": "application/json"})

    @property
    def cookie(self) -> str | None:
        return self.http.cookies.get("escrow_session")


@pytest.fixture
def browser(web_broker) -> Browser:  # noqa: ANN001
    return Browser(web_broker.url)


@pytest.fixture
def new_browser(web_broker) -> Callable[[], Browser]:  # noqa: ANN001
    return lambda: Browser(web_broker.url)
