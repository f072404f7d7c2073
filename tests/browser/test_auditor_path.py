"""An auditor in Chromium: the log filtered, an event opened, and the log verified against the
checkpoint saved from the page."""

from __future__ import annotations

import re

from browser_support import follow_login_link, login_link
from web.seed import deposit, depositor_token


def test_an_auditor_filters_the_log_and_verifies_it(tab, escrow, app):
    deposit(app.test_client(), escrow, depositor_token(escrow))
    auditor = tab()
    follow_login_link(auditor, login_link(escrow, "audrey@audit.example", "Audrey Auditor",
                                          global_roles=("auditor",)))
    page = auditor.page
    auditor.follow("Audit", exact=True)
    saved = page.locator("#checkpoint-note").inner_text()
    auditor.shot("audit")
    # At 1280 px the table stays inside its column (long ids wrap instead of overflowing).
    page.set_viewport_size({"width": 1280, "height": 900})
    table, column = page.evaluate("""() => {
        const table = document.querySelector("main table");
        const main = document.querySelector("main");
        const style = getComputedStyle(main);
        return [table.getBoundingClientRect().right,
                main.getBoundingClientRect().right - parseFloat(style.paddingRight)];
    }""")
    assert table <= column + 0.5, f"the audit table ends at {table} px, its column at {column}"
    page.set_viewport_size({"width": 1200, "height": 900})

    page.get_by_label("Action").fill("deposit.sealed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*/audit\?.*action=deposit\.sealed"))
    actions = page.locator("tbody tr td:nth-child(3)").all_inner_texts()
    assert actions == ["deposit.sealed"]
    assert "format=csv" in page.get_by_role("link", name="CSV").get_attribute("href")
    auditor.shot("audit-filtered")

    page.locator("tbody tr a").first.click()
    assert page.get_by_role("heading", level=1).inner_text().endswith("deposit.sealed")
    assert re.fullmatch(r"[0-9a-f]{64}", page.locator("dd code").nth(1).inner_text())
    auditor.shot("audit-event")

    auditor.open("/audit")
    auditor.follow("Verify the log")
    page.get_by_label("A checkpoint saved before").fill(saved)
    page.get_by_role("button", name="Verify now").click()
    result = page.locator("#verify-result").inner_text()
    assert result.startswith("The log verifies.")
    assert "It extends the checkpoint of size" in result
    auditor.shot("audit-verify")
    assert auditor.errors == []


def test_the_audit_log_sends_a_stranger_to_log_in(tab, escrow):
    stranger = tab()
    response = stranger.page.goto(stranger.base + "/audit")
    assert response.status == 200  # after the redirect: the provider's login page
    assert "/interaction/" in stranger.page.url or "/auth/login" in stranger.page.url
