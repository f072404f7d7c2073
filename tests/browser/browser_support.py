"""What the browser tests share beyond fixtures (imported by name: `conftest` is ambiguous):
a Chromium tab on the site, screenshots, and single-use login links."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from web.seed import make_login

from broker.adapters.db.models import User
from broker.domain.principals import OPERATOR
from broker.services import sessions

SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
ACCESSIBILITY_CHECK = """() => {
  const problems = [];
  if (document.querySelectorAll("h1").length !== 1) { problems.push("not exactly one h1"); }
  let last = 0;
  for (const heading of document.querySelectorAll("h1, h2, h3, h4, h5, h6")) {
    const level = Number(heading.tagName[1]);
    if (level > last + 1) {
      problems.push(`${heading.tagName} after h${last}: ${heading.textContent}`);
    }
    last = level;
  }
  for (const field of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    const label = (field.id && document.querySelector(`label[for="${field.id}"]`))
      || field.closest("label") || field.getAttribute("aria-label");
    if (!label) { problems.push(`${field.tagName} ${field.name} has no label`); }
  }
  for (const image of document.querySelectorAll("img:not([alt])")) {
    problems.push(`an image without alt: ${image.src}`);
  }
  return problems;
}"""


@dataclass
class Tab:
    """A Chromium tab on the site, recording what the console reported (a CSP violation is an
    error there: the pages' one script must run, and nothing else)."""

    page: object
    base: str
    errors: list[str] = field(default_factory=list)

    def open(self, path: str) -> object:
        self.page.goto(self.base + path)
        return self.page

    def follow(self, link: str, exact: bool = False) -> object:
        """Click a link and wait until its page has loaded (a click only starts the navigation:
        reading the page at once may read the old one, or a blank new one)."""
        target = self.page.get_by_role("link", name=link, exact=exact)
        href = target.get_attribute("href")
        target.click()
        self.page.wait_for_url(re.compile(re.escape(href.split("#")[0]) + r"([?#].*)?$"))
        self.page.wait_for_load_state()
        return self.page

    def shot(self, name: str) -> Path:
        """A full-page screenshot, kept as a CI artifact, of a page that passes the basic
        accessibility checks."""
        self.page.wait_for_load_state()
        problems = self.accessibility_problems()
        assert problems == [], (self.page.url, problems)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def accessibility_problems(self) -> list[str]:
        """One h1, headings without skipped levels, a label for every field, alt on images."""
        return self.page.evaluate(ACCESSIBILITY_CHECK)

    def csrf_token(self) -> str:
        return self.page.locator('input[name="csrf_token"]').first.get_attribute("value")

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """A JSON API call with this tab's login (cookie and CSRF header), as a script would."""
        response = self.page.request.fetch(
            self.base + path, method=method, data=json.dumps(body or {}),
            headers={"Content-Type": "application/json", "X-CSRF-Token": self.csrf_token()})
        assert response.ok, (response.status, response.text())
        return response.json()


def login_link(escrow, email: str, name: str, **roles: tuple) -> str:
    """A person with roles, and a single-use login link for them (as `escrow admin
    login-link` makes): the path to open."""
    login = make_login(escrow, email, name, roles.get("org_roles", ()),
                       roles.get("global_roles", ()))
    with escrow.uow() as uow:
        secret = sessions.create_login_link(uow, OPERATOR, uow.session.get(User, login.user_id))
        uow.commit()
    return f"/auth/link/{secret}"


def follow_login_link(tab: Tab, path: str) -> None:
    page = tab.open(path)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/me$"))
