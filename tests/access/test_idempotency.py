"""Idempotency-Key: a retried key release or approval gets the first answer, made once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from broker.adapters.db.models import IdempotencyRecord


@pytest.fixture
def request_id(sealed, researcher) -> str:
    return researcher.ask().json["request"]["id"]


def post(actor, path: str, key: str, body: dict | None = None):
    return actor.client.post(path, json=body or {}, headers={**actor.auth, "Idempotency-Key": key})


def test_a_retried_approval_returns_the_first_grant_and_decides_once(
    request_id, reviewer, events
):
    key = str(uuid.uuid4())
    first = post(reviewer, f"/api/v1/requests/{request_id}/approve", key)
    again = post(reviewer, f"/api/v1/requests/{request_id}/approve", key)
    assert first.status_code == again.status_code == 200
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(events("grant.created")) == len(events("review.approved")) == 1


def test_a_retried_release_returns_the_same_key_and_counts_once(
    escrow, request_id, reviewer, researcher, events
):
    grant = reviewer.post(f"/api/v1/requests/{request_id}/approve").json["grant"]
    url = f"/api/v1/grants/{grant['id']}/files/0/release"
    key = str(uuid.uuid4())
    first = post(researcher, url, key)
    again = post(researcher, url, key)
    assert first.status_code == again.status_code == 200
    assert again.json["header"] == first.json["header"]
    assert again.json["releases_left"] == first.json["releases_left"] == 1
    assert len(events("key.released")) == 1
    # A new key is a new release.
    assert post(researcher, url, str(uuid.uuid4())).json["releases_left"] == 0
    # The answer is kept encrypted: the wrapped file key is not readable in the database.
    with escrow.uow() as uow:
        stored = [r.answer for r in uow.session.scalars(select(IdempotencyRecord))]
    assert stored and all(first.json["header"].encode() not in answer for answer in stored)


def test_a_key_used_for_another_request_is_refused(request_id, reviewer, researcher):
    key = str(uuid.uuid4())
    assert post(reviewer, f"/api/v1/requests/{request_id}/approve", key).status_code == 200
    other = post(reviewer, f"/api/v1/requests/{request_id}/approve", key, {"days": 3})
    assert other.status_code == 422
    assert "used for a different request" in other.json["detail"]


def test_another_caller_with_the_same_key_is_not_answered_with_the_first_callers_answer(
    request_id, reviewer, person
):
    key = str(uuid.uuid4())
    assert post(reviewer, f"/api/v1/requests/{request_id}/approve", key).status_code == 200
    stranger = person("eve@uni.example")
    refused = post(stranger, f"/api/v1/requests/{request_id}/approve", key)
    assert refused.status_code == 403
    assert "Idempotent-Replayed" not in refused.headers


def test_a_malformed_key_is_refused_naming_the_header(request_id, reviewer):
    refused = post(reviewer, f"/api/v1/requests/{request_id}/approve", "short")
    assert refused.status_code == 400
    assert "Idempotency-Key" in refused.json["detail"]


def test_records_are_dropped_after_a_day_by_the_workers_housekeeping(
    escrow, request_id, reviewer
):
    from sqlalchemy import update

    from broker.services.worker import housekeeping

    assert post(reviewer, f"/api/v1/requests/{request_id}/approve", str(uuid.uuid4())).json
    housekeeping(escrow)
    with escrow.uow() as uow:
        assert len(uow.session.scalars(select(IdempotencyRecord)).all()) == 1
        uow.session.execute(update(IdempotencyRecord).values(
            created_at=datetime.now(UTC) - timedelta(hours=25)))
        uow.commit()
    housekeeping(escrow)
    with escrow.uow() as uow:
        assert uow.session.scalars(select(IdempotencyRecord)).all() == []
