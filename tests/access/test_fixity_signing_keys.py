"""Fixity restores `keys/signing/` from the database, as it does headers and identities, so that
`escrow recover` accepts the bucket again; a run that finds them intact rewrites nothing."""

from __future__ import annotations

import pytest

from broker.domain.principals import SYSTEM
from broker.services import audit, signing
from broker.services.fixity import run_fixity
from broker.services.recovery import RecoveryFailed, recover


def test_fixity_restores_the_signing_keys_and_recovery_accepts_the_bucket(
    escrow,
    sealed,
    events,
    fresh,
) -> None:
    intact = run_fixity(escrow, SYSTEM, max_bytes_per_s=0)
    assert intact.ok and intact.keys_repaired == []  # nothing to repair: nothing rewritten

    keys = escrow.store.list_keys(signing.KEYS_PREFIX)
    assert len(keys) >= 2
    for key in keys:
        escrow.store.delete(key)
    with pytest.raises(RecoveryFailed, match="signing key"):
        recover(fresh)

    report = run_fixity(escrow, SYSTEM, max_bytes_per_s=0)

    assert report.ok
    with escrow.uow() as uow:
        from sqlalchemy import select

        from broker.adapters.db.models import SigningKey

        expected = sorted(signing.key_object(k) for k in uow.session.scalars(select(SigningKey)))
    assert sorted(r.key for r in report.keys_repaired) == expected
    assert all(
        (r.copy, r.source, r.problem) == ("primary", "database", "is missing")
        for r in report.keys_repaired
    )
    repaired = [e["subject"]["object"] for e in events("fixity.repaired")]
    assert sorted(repaired) == expected
    assert escrow.store.list_keys(signing.KEYS_PREFIX) == expected
    with escrow.uow() as uow:
        assert report.checkpoint == audit.head(uow)[0]  # the run ends with a signed checkpoint

    result = recover(fresh)
    assert result.deposits == [sealed["deposit_id"]]
    assert result.verified == {sealed["deposit_id"]: True}
