"""Browser tests: Debian's Chromium (`/usr/bin/chromium`, headless) driven by Playwright against
the broker served over real HTTP, with a real OpenID Provider (node oidc-provider) on loopback.

They have their own loopback socket and provider (registered with that socket's callback), so
they run alone or next to tests/web. A missing chromium, playwright or node skips them locally
and fails them in CI (`require_part`). Each saves full-page screenshots of the pages it visits
in tests/artifacts/screenshots/ (CI keeps that folder as an artifact; git ignores it).
"""

from __future__ import annotations

import importlib.util
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import servers
from browser_support import Tab
from live import require_part
from web.seed import make_policy_dir
from web.served import WebBroker, issuer_config, serve

CHROMIUM = Path("/usr/bin/chromium")
TIME_ZONE = "Europe/Paris"  # not UTC: pages must show times in the reader's zone
TIMEOUT_MS = 15_000


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: these tests are about the pages in a browser; tests/web runs every page on
    both databases."""
    path = tmp_path / "escrow.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """Debian's Chromium under Playwright (never the browser `playwright install` downloads)."""
    require_part(CHROMIUM.exists(), f"Debian's chromium ({CHROMIUM}; apt-get install chromium)")
    require_part(importlib.util.find_spec("playwright") is not None,
                 "playwright (pip install -e '.[test]')")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def browser_listener() -> Iterator[socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener


@pytest.fixture(scope="session")
def browser_provider(tmp_path_factory, browser_listener) -> Iterator[servers.OidcProvider]:
    """A real OpenID Provider that knows this socket's /auth/callback."""
    command = servers.oidc_provider_command()
    require_part(command is not None,
                 f"node and oidc-provider ({servers.OIDC_PROVIDER_PACKAGE}; run make test-peers)")
    callback = f"http://127.0.0.1:{browser_listener.getsockname()[1]}/auth/callback"
    client = servers.OidcClient("escrow-broker", secrets.token_urlsafe(24), (callback,))
    with servers.oidc_provider(tmp_path_factory.mktemp("oidc"), command, client) as provider:
        yield provider


@pytest.fixture(scope="session")
def served(browser_listener) -> Iterator[WebBroker]:
    with serve(browser_listener) as broker:
        yield broker


@pytest.fixture
def settings(settings, tmp_path, served, browser_provider):
    return settings.with_overrides(
        policy_dir=make_policy_dir(tmp_path / "policies"),
        public_url=served.url,
        oidc_issuers=(issuer_config(browser_provider),),
    )


@pytest.fixture
def site(app, served) -> Iterator[str]:
    """The app of this test, served; its URL."""
    served.app = app
    yield served.url
    served.app = None


# --- a page in Chromium -----------------------------------------------------------------------


@pytest.fixture
def tab(chromium, site) -> Iterator[Callable[[], Tab]]:
    """tab() -> a new tab with its own cookies (a person of its own), in Paris time."""
    contexts = []

    def make() -> Tab:
        context = chromium.new_context(timezone_id=TIME_ZONE, locale="en-GB",
                                       viewport={"width": 1200, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        opened = Tab(context.new_page(), site)

        def record(text: str) -> None:  # the broker's pages only, not the provider's
            if opened.page.url.startswith(site):
                opened.errors.append(f"{opened.page.url}: {text}")

        opened.page.on("console", lambda message: message.type == "error" and record(message.text))
        opened.page.on("pageerror", lambda error: record(str(error)))
        return opened

    yield make
    for context in contexts:
        context.close()
