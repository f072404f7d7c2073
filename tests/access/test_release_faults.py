"""Key releases while the connection to PostgreSQL is reset around COMMIT (part of the fault
suite, here for the access fixtures): every release counted is a key the researcher received.

The broker's database connections go through a `FaultProxy`. Before a release's COMMIT reaches
the server, or after the server answered it, the proxy resets the connection: the broker cannot
know whether the change was made, says so (503, outcome unknown), and the client's retry with
the same Idempotency-Key gets the first outcome (or makes the release, if there was none).
"""

from __future__ import annotations

import itertools
import secrets
import shutil
import uuid
from pathlib import Path

import pytest
from access_support import POLICY as BASE_POLICY
from faultproxy import TO_CLIENT, TO_SERVER, FaultProxy
from live import postgres_url
from sqlalchemy import func, select

from broker.adapters.db.models import KeyRelease
from broker.services.audit import verify_deployment

RELEASES = 24
POLICY = BASE_POLICY.replace("releases_per_file: 2", "releases_per_file: 1000")
assert "releases_per_file: 1000" in POLICY


class CommitBreaker:
    """The proxy's tap: once armed, waits for a key release's INSERT, then resets that
    connection at its COMMIT, either before the server gets it or after it answered."""

    def __init__(self) -> None:
        self.armed: str | None = None  # "before" | "after"
        self.saw_release = False
        self.broken = 0

    def __call__(self, direction: str, data: bytes) -> bool:
        if self.armed is None:
            return False
        if direction == TO_SERVER and b"key_releases" in data and b"INSERT" in data:
            self.saw_release = True
        if not self.saw_release:
            return False
        hit = (self.armed == "before" and direction == TO_SERVER and b"COMMIT" in data) or (
            self.armed == "after" and direction == TO_CLIENT and b"COMMIT\x00" in data
        )
        if hit:
            self.armed, self.saw_release = None, False
            self.broken += 1
        return hit


@pytest.fixture
def breaker() -> CommitBreaker:
    return CommitBreaker()


@pytest.fixture
def database_url(postgres_template, breaker):
    admin, template, created = postgres_template
    name = f"escrow_f_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    created.append(name)
    with FaultProxy(("127.0.0.1", 5432), tap=breaker) as proxy:
        yield postgres_url(name).replace("127.0.0.1:5432", proxy.address)


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    (directory / "ndas").mkdir(parents=True)
    repo = Path(__file__).resolve().parents[2] / "policies" / "ndas"
    shutil.copy(repo / "acme-research-nda-v1.md", directory / "ndas")
    (directory / "acme-ai.yaml").write_text(POLICY)
    return directory


def release(researcher, url: str, key: str | None, tries: int = 5):
    """A client that retries what a retry can fix, with the same Idempotency-Key."""
    headers = {**researcher.auth, **({"Idempotency-Key": key} if key else {})}
    for _ in range(tries):
        answer = researcher.client.post(url, json={}, headers=headers)
        if answer.status_code != 503:
            return answer
    return answer


def test_releases_counted_equal_keys_received_under_connection_resets(
    escrow, sealed, researcher, reviewer, breaker, events
):
    request_id = researcher.ask().json["request"]["id"]
    grant = reviewer.post(f"/api/v1/requests/{request_id}/approve").json["grant"]
    url = f"/api/v1/grants/{grant['id']}/files/0/release"
    received, told_unknown = [], 0
    for fault in itertools.islice(itertools.cycle(["before", "after", None]), RELEASES):
        breaker.armed = fault
        key = str(uuid.uuid4())
        answer = researcher.client.post(
            url, json={}, headers={**researcher.auth, "Idempotency-Key": key}
        )
        if answer.status_code == 503:
            assert answer.json["title"] == "outcome unknown", answer.json
            assert answer.json["idempotency_key"] == key
            assert "not made" not in answer.json["detail"]
            told_unknown += 1
            answer = release(researcher, url, key)
        assert answer.status_code == 200, answer.json
        received.append(answer.json["releases_left"])  # one number per release
    with escrow.uow() as uow:
        counted = uow.session.scalar(select(func.count()).select_from(KeyRelease))
    print(f"\nFIGURE releases under resets: {RELEASES} asked, {breaker.broken} COMMITs broken, "
          f"{told_unknown} told 'outcome unknown', {counted} counted, {len(set(received))} "
          "keys received")
    assert breaker.broken == 2 * RELEASES // 3
    assert told_unknown == breaker.broken
    assert counted == len(set(received)) == RELEASES
    assert len(events("key.released")) == counted  # each change, exactly one event
    assert verify_deployment(escrow, None)["size"] > 0
