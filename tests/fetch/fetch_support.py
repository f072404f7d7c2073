"""Helpers of the fetch tests: a sealed deposit, and a grant seeded in the database."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path


def seal(escrow, lab, files: dict[str, bytes], version: str = "2024-05",
         classical: bool = True) -> dict:
    """A sealed deposit of `files` (classical by default: faster, and `age` opens it)."""
    from broker.services import worker

    deposit = lab.open(files, version=version, classical=classical)
    for path, data in files.items():
        response = lab.upload(deposit, path, data)
        assert response.status_code == 200, response.json
    assert lab.post(f"/api/v1/deposits/{deposit['deposit_id']}/finalize").status_code == 202
    worker.run_pending(escrow)
    sealed = lab.get(f"/api/v1/deposits/{deposit['deposit_id']}").json
    assert sealed["state"] == "sealed", sealed
    return sealed


@dataclass
class Researcher:
    token: str
    identity: object  # age identity
    identity_file: Path
    user_id: int


def grant(escrow, researcher: Researcher, deposit_id: str, *,
          releases_per_file: int = 10, expires_in: timedelta = timedelta(days=1)) -> str:
    """An approved request and an active grant for the researcher's key (seeded)."""
    from broker.adapters.db.models import AccessRequest, ResearcherKey
    from broker.services import grants

    now = datetime.now(UTC)
    recipient = str(researcher.identity.to_recipient())
    with escrow.uow() as uow:
        key = ResearcherKey(id="rk_" + secrets.token_hex(6), user_id=researcher.user_id,
                            recipient=recipient, key_type="x25519", label="test",
                            proven_at=now)
        uow.session.add(key)
        uow.session.flush()  # no relationship orders the two inserts
        request = AccessRequest(id="rq_" + secrets.token_hex(6), user_id=researcher.user_id,
                                deposit_id=deposit_id, key_id=key.id, purpose="fetch tests",
                                state="approved", decided_at=now,
                                policy_sha256=hashlib.sha256(b"test").hexdigest())
        uow.session.add(request)
        uow.session.flush()
        made = grants.create_grant(uow, request, key, not_before=now - timedelta(seconds=1),
                                   expires_at=now + expires_in,
                                   releases_per_file=releases_per_file)
        uow.commit()
        return made.id
