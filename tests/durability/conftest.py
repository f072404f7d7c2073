"""Durability fixtures: an escrow (local store on disk; a mirror directory when a module asks
for one through `mirror_url`), a sealed deposit made through the API, an operator's browser."""

from __future__ import annotations

from pathlib import Path

import pytest
from durability_support import seal


@pytest.fixture
def mirror_url() -> str:
    """No mirror, unless a module overrides this fixture."""
    return ""


@pytest.fixture
def settings(settings, mirror_url: str):
    # No budget by default: tests that check the pacing give their own (and a fake clock).
    return settings.with_overrides(mirror_url=mirror_url, fixity_max_bytes_per_s=0)


@pytest.fixture
def sealed(escrow, client) -> dict:
    """acme-ai/gpt-small@2024-05, deposited through the API and sealed by the worker."""
    return seal(client, escrow)


@pytest.fixture
def primary_root(escrow) -> Path:
    return escrow.store.objects_root


@pytest.fixture
def operator_page(app, escrow):
    """operator_page() -> the HTML of /operator, seen by a logged-in operator."""
    from web.seed import make_login

    def get() -> str:
        login = make_login(escrow, "otto@escrow.example", "Otto", global_roles=("operator",))
        client = app.test_client()
        with client.session_transaction() as cookie:
            cookie["login_session"] = login.session_id
        response = client.get("/operator", headers={"Accept": "text/html"})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_data(as_text=True)

    return get
