"""The auditor's pages: the log with filters and paging, an event, the newest checkpoint, the
self-check, export links; the login page for strangers and a 403 naming the role for others."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import update

from broker.adapters.db.models import AuditEvent
from broker.domain.principals import OPERATOR
from broker.web import audit as audit_pages


@pytest.fixture
def auditor(visitor):
    return visitor("audrey@audit.example", "Audrey Auditor", global_roles=("auditor",))


def events_listed(page: str) -> list[tuple[int, str]]:
    found = re.findall(r'<a href="/audit/events/(\d+)">.*?<code>([\w.]+)</code>', page, re.S)
    return [(int(seq), action) for seq, action in found]


def test_without_a_login_the_log_sends_you_to_log_in_never_500(visitor):
    for accept in ("text/html", "application/json"):
        response = visitor().client.get("/audit", headers={"Accept": accept})
        assert response.status_code == 302
        assert response.headers["Location"] == "/auth/login?next=/audit"


@pytest.mark.parametrize("roles", [{}, {"org_roles": (("acme-ai", "admin"),)},
                                   {"org_roles": (("acme-ai", "reviewer"),)}])
def test_a_person_who_is_not_an_auditor_gets_a_403_naming_the_role(visitor, roles):
    for path in ("/audit", "/audit/events/0", "/audit/verify"):
        response = visitor("rosa@uni.example", **roles).get(path)
        assert response.status_code == 403
        assert 'id="needed-role">the global role auditor<' in response.get_data(as_text=True)


def test_the_auditor_sees_the_newest_events_and_the_latest_checkpoint(auditor, sealed):
    page = auditor.page("/audit")
    listed = events_listed(page)
    assert "deposit.sealed" in {action for _, action in listed}
    assert [seq for seq, _ in listed] == sorted((seq for seq, _ in listed), reverse=True)
    note = html.unescape(re.search(r'<pre[^>]*id="checkpoint-note">([^<]+)</pre>', page)[1])
    assert note.splitlines()[1] == str(max(seq for seq, _ in listed) + 1)  # the size


def test_filters_narrow_the_log(auditor, sealed):
    sealed_only = events_listed(auditor.page("/audit?action=deposit.sealed"))
    assert [action for _, action in sealed_only] == ["deposit.sealed"]
    by_model = events_listed(auditor.page("/audit?model=acme-ai/gpt-small"))
    assert by_model and {"deposit.sealed"} <= {action for _, action in by_model}
    assert events_listed(auditor.page("/audit?model=acme-ai/none")) == []
    page = auditor.page("/audit?org=acme-ai&action=deposit.sealed")
    assert 'value="deposit.sealed"' in page  # the form keeps what was typed
    assert "format=csv" in page and "org=acme-ai&amp;action=deposit.sealed" in page


def test_a_filter_that_names_nobody_says_so_above_the_form(auditor):
    response = auditor.get("/audit?actor=nobody@nowhere.example")
    assert response.status_code == 404
    text = response.get_data(as_text=True)
    assert "does not exist" in text and 'id="actor"' in text


def test_the_log_pages_backwards_to_older_events(auditor, sealed, monkeypatch):
    monkeypatch.setattr(audit_pages, "PAGE_SIZE", 3)
    first = auditor.page("/audit")
    newest = events_listed(first)
    assert len(newest) == 3
    older_link = html.unescape(re.search(r'<a href="(/audit\?[^"]+)" rel="next">', first)[1])
    assert f"before={newest[-1][0]}" in older_link
    older = events_listed(auditor.page(older_link))
    assert older[0][0] == newest[-1][0] - 1


def test_an_event_shows_its_exact_leaf_and_hash(auditor, escrow, sealed):
    with escrow.uow() as uow:
        row = uow.session.get(AuditEvent, 0)
        leaf, digest = bytes(row.leaf), bytes(row.leaf_hash).hex()
    page = auditor.page("/audit/events/0")
    assert digest in page
    assert leaf.decode() in html.unescape(page)


def test_the_self_check_verifies_and_extends_a_saved_checkpoint(auditor, escrow, sealed):
    page = auditor.page("/audit")
    note = html.unescape(re.search(r'id="checkpoint-note">([^<]+)</pre>', page)[1])
    with escrow.uow() as uow:  # the log grows after the auditor saved the checkpoint
        uow.audit("test.event", OPERATOR, {"org": "acme-ai"}, {})
        uow.commit()
    saved_size = int(note.splitlines()[1])
    result = auditor.post("/audit/verify", {"saved_checkpoint": note.replace("\n", "\r\n")})
    assert result.status_code == 200
    text = result.get_data(as_text=True)
    assert "The log verifies." in text
    assert f"It extends the checkpoint\n  of size {saved_size} you gave." in text


def test_the_self_check_finds_a_rewritten_entry(auditor, escrow, sealed):
    with escrow.uow() as uow:
        uow.session.execute(update(AuditEvent).where(AuditEvent.seq == 1)
                            .values(leaf=b'{"rewritten": true}'))
        uow.commit()
    result = auditor.post("/audit/verify")
    assert result.status_code == 409
    assert "The log does not verify." in result.get_data(as_text=True)


def test_the_self_check_without_the_csrf_token_is_refused(auditor):
    assert auditor.post("/audit/verify", csrf=False).status_code == 403
