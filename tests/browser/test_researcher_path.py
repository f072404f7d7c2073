"""A researcher in Chromium: the list of models, a login at the institution's OpenID Provider
through its own pages, a key proven, the NDA read and signed, and a request sent."""

from __future__ import annotations

import io
import re

import pytest
from web.seed import deposit, depositor_token

from broker import age

PROVIDER_ACCOUNT = "ada"  # Ada Lovelace, ada@uni.example (tests/node/oidc_provider.mjs)


@pytest.fixture
def lab(escrow, app) -> dict:
    return deposit(app.test_client(), escrow, depositor_token(escrow))


def log_in_at_the_provider(tab, account: str) -> None:
    """From the broker's Log in link through the provider's login and consent pages, back."""
    page = tab.page
    page.get_by_role("link", name="Log in").click()
    page.locator('input[name="login"]').fill(account)
    page.locator('input[name="password"]').fill("any password")
    page.get_by_role("button", name="Sign-in").click()
    while not page.url.startswith(tab.base):  # the consent page, the first time
        page.locator('form button[type="submit"]').first.click()
        page.wait_for_load_state()


def register_a_key(tab) -> tuple[age.Identity, dict]:
    """What `escrow keys add age1…` does from the terminal, with this browser's login."""
    identity = age.generate_x25519_identity()
    return identity, tab.api("POST", "/api/v1/me/keys",
                             {"recipient": identity.to_recipient().encode()})


def prove_the_key(tab, identity: age.Identity, made: dict) -> None:
    """What `escrow keys prove KEY_ID --identity key.txt` does."""
    out = io.BytesIO()
    age.decrypt(io.BytesIO(made["challenge"].encode()), out, [identity])
    secret = re.search(r"^secret: ([0-9a-f]{64})$", out.getvalue().decode(), re.M)[1]
    tab.api("POST", f"/api/v1/me/keys/{made['id']}/proof", {"response": secret})


def test_a_researcher_logs_in_signs_the_nda_and_requests_access(tab, lab):
    researcher = tab()
    page = researcher.open("/")
    assert page.get_by_role("heading", level=1).inner_text().startswith("Model weights held")
    assert page.get_by_role("heading", name="acme-ai/gpt-small").is_visible()
    researcher.shot("home")

    log_in_at_the_provider(researcher, PROVIDER_ACCOUNT)
    assert page.url == researcher.base + "/"
    assert page.get_by_role("button", name="Log out").is_visible()

    identity, key = register_a_key(researcher)
    researcher.open("/me")
    assert page.get_by_role("heading", level=1).inner_text() == "Ada Lovelace"
    assert "not proven yet" in page.locator(f"#key-{key['id']}").inner_text()
    assert f"escrow keys prove {key['id']} --identity key.txt" in page.locator("main").inner_text()
    researcher.shot("profile-key-pending")
    prove_the_key(researcher, identity, key)
    page.reload()
    assert page.locator(f"#key-{key['id']}").get_by_text("proven").is_visible()
    researcher.shot("profile")

    researcher.open("/")
    researcher.follow("Request access to acme-ai/gpt-small@2024-05")
    assert page.get_by_text("Still missing, as the policy decides now").is_visible()
    researcher.shot("request-missing")

    researcher.follow("Read and sign the NDA acme-research-nda")
    assert "Research Access Agreement" in page.locator("pre.document").inner_text()
    researcher.shot("nda")
    page.get_by_label("I have read this agreement and accept its terms.").check()
    page.get_by_label("Your full name").fill("Ada Lovelace")
    page.get_by_role("button", name="Sign the agreement").click()

    page.wait_for_url(re.compile(r".*/request/acme-ai/gpt-small/2024-05$"))  # back to the request
    assert "Nothing is missing on your side" in page.locator("#missing").inner_text()
    page.get_by_label("Purpose").fill("sycophancy interpretability study")
    page.get_by_label("Days of access").fill("12")
    researcher.shot("request")
    page.get_by_role("button", name="Send the request").click()

    page.wait_for_url(re.compile(r".*/requests\?made=rq_\w+"))
    assert "waiting for the reviewers" in page.get_by_role("status").inner_text()
    assert page.locator("td .badge", has_text="pending").is_visible()
    researcher.shot("my-requests")
    assert researcher.errors == []


def test_times_show_in_the_readers_zone_with_utc_on_hover(tab, lab):
    page = tab().open("/")
    sealed = page.locator("time").first
    assert sealed.get_attribute("data-localised") is not None  # the script ran under the CSP
    assert sealed.get_attribute("title").endswith(" UTC")
    assert not sealed.inner_text().endswith("UTC")  # Paris time: CET or CEST
    assert re.search(r"CES?T|GMT\+[12]", sealed.inner_text())


def test_the_pages_are_usable_with_the_keyboard(tab, lab):
    page = tab().open("/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    # The jump to #main is a same-page navigation that lands after the key press returns: wait
    # for it (the default timeout fails the test if the link goes nowhere).
    page.wait_for_url(re.compile(r".*#main$"))
    for _ in range(3):  # then the links of the page, in order, each visibly focused
        page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.tagName")
    assert focused in ("A", "BUTTON")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
