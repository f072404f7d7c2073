"""Honest releases: with the object store down (its S3 server process stopped), a key release
answers 503 "the object store is unavailable; nothing was counted; retry" and counts nothing
(no release row, no `key.released` event); a payload missing from the store is refused alike."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import servers
from sqlalchemy import func, select

from broker.adapters.db.models import KeyRelease

BUCKET = "escrow-outage"


class StoppableS3:
    """A moto server of this test's own, which the test can stop."""

    def __init__(self, workdir: Path) -> None:
        self.stack = contextlib.ExitStack()
        command = servers.moto_server_command()
        assert command is not None, "moto[server] is a test dependency"
        self.endpoint = self.stack.enter_context(servers.moto_server(workdir, command))

    def stop(self) -> None:
        self.stack.close()


@pytest.fixture
def own_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoppableS3]:
    s3 = StoppableS3(tmp_path / "moto")
    for name, value in s3.endpoint.env().items():
        monkeypatch.setenv(name, value)
    s3.endpoint.client("s3").create_bucket(Bucket=BUCKET)
    yield s3
    s3.stop()


@pytest.fixture
def settings(settings, own_s3: StoppableS3):
    return settings.with_overrides(
        storage_url=f"s3://{BUCKET}/escrow", s3_endpoint_url=own_s3.endpoint.url
    )


@pytest.fixture
def granted(sealed, researcher, reviewer) -> dict:
    request_id = researcher.ask().json["request"]["id"]
    decided = reviewer.post(f"/api/v1/requests/{request_id}/approve")
    assert decided.status_code == 200, decided.json
    return decided.json["grant"]


def releases(escrow) -> int:
    with escrow.uow() as uow:
        return uow.session.scalar(select(func.count()).select_from(KeyRelease))


def test_a_release_during_a_store_outage_counts_nothing(
    escrow,
    granted,
    researcher,
    own_s3,
    events,
) -> None:
    url = f"/api/v1/grants/{granted['id']}/files/0/release"
    first = researcher.post(url)
    assert first.status_code == 200, first.json
    assert first.json["releases_left"] == 1  # the test policy allows 2 per file

    own_s3.stop()
    for _ in range(3):
        refused = researcher.post(url)
        assert refused.status_code == 503, refused.json
        assert refused.mimetype == "application/problem+json"
        assert refused.json["detail"].startswith(
            "the object store is unavailable; nothing was counted; retry"
        )
        assert "not counted" in refused.json["hint"]
    assert releases(escrow) == 1
    assert len(events("key.released")) == 1


def test_a_release_of_a_missing_payload_counts_nothing(escrow, granted, researcher, events):
    from broker.services.deposits import deposit_prefix, payload_key

    escrow.store.delete(deposit_prefix(granted["deposit_id"]) + payload_key(0))
    refused = researcher.post(f"/api/v1/grants/{granted['id']}/files/0/release")
    assert refused.status_code == 503, refused.json
    assert "is missing in the object store" in refused.json["detail"]
    assert "nothing was counted" in refused.json["detail"]
    assert releases(escrow) == 0 and events("key.released") == []
