"""The public pages: the home page lists what is escrowed and on which terms, `/api/v1/models`
says the same as JSON, and every page shows times in UTC for its one allowed script to localise."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta

from web.seed import deposit, depositor_token

from broker.web.common import time_left


def test_the_home_page_lists_each_sealed_model_with_its_terms(visitor, sealed):
    page = visitor().page("/")
    assert "acme-ai/gpt-small" in page
    assert "2024-05" in page
    assert "Organisation</dt><dd>acme-ai" in page
    assert "Sign the NDA acme-research-nda (version 1 or later)." in page
    assert "Approved by a reviewer of acme-ai, none from your own organisation." in page
    assert "14 days unless asked otherwise, 30 days at most" in page
    assert "in 2 files" in page  # the size of the version, and its files
    assert 'href="/request/acme-ai/gpt-small/2024-05"' in page


def test_a_version_not_sealed_yet_is_not_listed(visitor, escrow, client, sealed):
    deposit(client, escrow, depositor_token(escrow), model="acme-ai/gpt-big", seal=False)
    page = visitor().page("/")
    assert "acme-ai/gpt-small" in page
    assert "acme-ai/gpt-big" not in page


def test_a_model_no_policy_names_is_listed_as_not_requestable(visitor, escrow, client):
    deposit(client, escrow, depositor_token(escrow, "other-lab"), model="other-lab/tiny")
    page = visitor().page("/")
    assert "other-lab/tiny" in page
    assert "No access policy names this model" in page
    assert 'href="/request/other-lab/tiny/' not in page


def test_the_models_api_needs_no_login_and_names_models_org_slash_model(client, sealed):
    response = client.get("/api/v1/models")
    assert response.status_code == 200
    (model,) = response.json["models"]
    assert model["name"] == "acme-ai/gpt-small"
    assert model["organisation"] == "acme-ai"
    (version,) = model["versions"]
    assert version["version"] == "2024-05"
    assert version["deposit_id"] == sealed["deposit_id"]
    assert version["size"] == len(b"\x00weights\x01" * 9000) + len(b'{"layers": 2}')
    assert version["files"] == 2
    assert version["sealed_at"] and version["last_verified_at"]
    policy = model["policy"]
    assert policy["nda"] == {"id": "acme-research-nda", "min_version": "1"}
    assert policy["approvals"]["count"] == 1
    assert policy["grant"]["max_days"] == 30
    assert any("30 days at most" in sentence for sentence in policy["summary"])


def test_the_models_api_lists_nothing_before_a_deposit_is_sealed(client):
    assert client.get("/api/v1/models").json == {"models": []}


def test_times_are_utc_in_a_time_element_with_the_utc_value_on_hover(visitor, sealed):
    page = visitor().page("/")
    times = re.findall(r'<time datetime="([^"]+)" title="([^"]+)">([^<]+)</time>', page)
    assert times
    for iso, title, text in times:
        assert iso.endswith("Z")
        assert title.endswith(" UTC") and text.endswith(" UTC")
        assert datetime.fromisoformat(iso.replace("Z", "+00:00")).tzinfo is not None


def test_the_pages_one_script_is_allowed_by_its_hash_and_nothing_else_runs(visitor):
    response = visitor().get("/")
    policy = response.headers["Content-Security-Policy"]
    (script,) = re.findall(r"<script>(.*?)</script>", response.get_data(as_text=True), re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["X-Frame-Options"] == "DENY"


def test_durations_read_as_time_left():
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert time_left(now + timedelta(days=12), now) == "12 days left"
    assert time_left(now + timedelta(days=14) - timedelta(seconds=1), now) == "14 days left"
    assert time_left(now + timedelta(hours=5), now) == "5 hours left"
    assert time_left(now + timedelta(minutes=40), now) == "40 minutes left"
    assert time_left(now + timedelta(seconds=30), now) == "less than 2 minutes left"
    assert time_left(now - timedelta(seconds=1), now) == "expired"
    assert time_left("2025-01-13T00:00:00Z", now) == "12 days left"
