"""Web fixtures: the broker served over real HTTP (werkzeug in a thread, on the socket the
OpenID Providers know as its callback), a browser-like client that logs in through the
provider's own login and consent pages, and, for page tests on Flask's test client, a small
world (`web.seed`) with people logged in by cookie."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin

import pytest
import requests
from web.seed import (
    Login,
    add_proven_key,
    deposit,
    depositor_token,
    make_login,
    make_policy_dir,
    sign_nda,
)
from web.served import WebBroker, issuer_config, serve

TIMEOUT_S = 10


@pytest.fixture(scope="session")
def web_broker(web_listener) -> Iterator[WebBroker]:
    with serve(web_listener) as broker:
        yield broker


@pytest.fixture
def mount(escrow, web_broker, oidc_provider) -> Iterator[Callable[..., object]]:
    """`mount(uni=provider, ...)` serves a broker app configured with these providers, each
    under its name."""
    from broker import create_app

    apps = []

    def _mount(**providers):
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
def login_app(mount, oidc_provider):
    """The broker with one provider: the test provider, named "uni"."""
    return mount(uni=oidc_provider)


@dataclass
class Browser:
    """A browser-like HTTP client: a cookie jar, redirects followed by hand so that a test can
    stop at, inspect, alter or replay any hop."""

    broker: str
    http: requests.Session = field(default_factory=requests.Session)

    def get(self, url: str, **kwargs) -> requests.Response:
        return self.http.get(urljoin(self.broker, url), allow_redirects=False,
                             timeout=TIMEOUT_S, **kwargs)

    def post(self, url: str, **kwargs) -> requests.Response:
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
def browser(web_broker) -> Browser:
    return Browser(web_broker.url)


@pytest.fixture
def new_browser(web_broker) -> Callable[[], Browser]:
    return lambda: Browser(web_broker.url)


# --- pages through Flask's test client: a small world and people logged in by cookie ----------

CSRF = "test-csrf-token"


@pytest.fixture
def settings(settings, tmp_path):
    """The page tests' policy directory (one reviewer's approval, the NDA, a proven key)."""
    return settings.with_overrides(policy_dir=make_policy_dir(tmp_path / "policies"))


@pytest.fixture
def sealed(escrow, client) -> dict:
    """acme-ai/gpt-small@2024-05, deposited through the API and sealed by the worker."""
    return deposit(client, escrow, depositor_token(escrow))


@dataclass
class Visitor:
    """A browser on the Flask test client: its own cookie jar, logged in (or not)."""

    client: object
    login: Login | None = None

    def get(self, path: str, **kwargs):
        return self.client.get(path, headers={"Accept": "text/html"}, **kwargs)

    def post(self, path: str, data: dict | None = None, *, csrf: bool = True):
        form = {**(data or {}), **({"csrf_token": CSRF} if csrf else {})}
        return self.client.post(path, data=form, headers={"Accept": "text/html"})

    def page(self, path: str) -> str:
        response = self.get(path)
        assert response.status_code == 200, (response.status_code, response.get_data(True))
        return response.get_data(as_text=True)


@pytest.fixture
def visitor(app, escrow) -> Callable[..., Visitor]:
    """visitor(email=None, name=..., org_roles=(), global_roles=()) -> a Visitor logged in as
    that person (anonymous without an email)."""

    def make(email: str | None = None, name: str | None = None,
             org_roles: tuple[tuple[str, str], ...] = (),
             global_roles: tuple[str, ...] = ()) -> Visitor:
        client = app.test_client()
        login = None
        if email is not None:
            login = make_login(escrow, email, name or email.split("@")[0].title(), org_roles,
                               global_roles)
        with client.session_transaction() as cookie:
            cookie["csrf_token"] = CSRF
            if login is not None:
                cookie["login_session"] = login.session_id
        return Visitor(client, login)

    return make


@pytest.fixture
def researcher(visitor, client) -> Visitor:
    """Rosa: eligible under the policy (a proven key, the NDA signed)."""
    rosa = visitor("rosa@uni.example", "Rosa Franklin")
    add_proven_key(client, rosa.login.auth)
    sign_nda(client, rosa.login.auth, "Rosa Franklin")
    return rosa


@pytest.fixture
def reviewer(visitor) -> Visitor:
    return visitor("rita@acme.example", "Rita Reviewer", (("acme-ai", "reviewer"),))
