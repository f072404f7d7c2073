"""Moving from a local key to AWS KMS is a rotation (moto's KMS over HTTP): brokers configured
for either backend read both kinds of blob meanwhile, and the report says what to configure."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from broker.adapters.custody.aws_kms import AwsKmsCustody
from broker.adapters.custody.keyring import Keyring
from broker.adapters.custody.local import LocalCustody
from broker.adapters.db.models import AuditEvent
from broker.container import Escrow
from broker.errors import CustodyError
from broker.services.master_key import rotate

from .support import bucket_keys, keys_in_use, make_deposits, plaintexts

pytestmark = pytest.mark.s3


@pytest.fixture
def kms_key_id(moto_endpoint) -> str:
    return moto_endpoint.client("kms").create_key(Description="escrow rotation")["KeyMetadata"][
        "KeyId"
    ]


@pytest.fixture
def open_kms(moto_endpoint):
    def opened(key_id: str) -> AwsKmsCustody:
        session = moto_endpoint.session()
        return AwsKmsCustody(key_id, endpoint_url=moto_endpoint.url, session=session)

    return opened


def broker(escrow: Escrow, current, open_kms) -> Escrow:
    """A broker process with `current` custody and a keyring reading both backends (what
    `open_custody` builds, with moto's credentials)."""

    def reader(info):
        if info.backend == "local":
            return LocalCustody(escrow.settings.key_file)
        return open_kms(info.key_id)

    settings = escrow.settings
    if current.name == "aws-kms":  # restarted with ESCROW_KEY_CUSTODY=aws-kms
        settings = settings.with_overrides(key_custody="aws-kms", kms_key_id=current.key_id)
    return replace(escrow, settings=settings, custody=Keyring(current, reader))


@pytest.fixture
def local_broker(escrow, open_kms) -> Escrow:
    return broker(escrow, LocalCustody(escrow.settings.key_file), open_kms)


def test_local_to_kms_is_a_rotation_finished_after_the_configuration_changes(
    escrow, deposits, local_broker, kms_key_id, open_kms
):
    before = plaintexts(local_broker)
    report = rotate(local_broker, open_kms(kms_key_id), settle_s=0)

    arn = report.key.removeprefix("aws-kms:")
    assert arn.startswith("arn:aws:kms:us-east-1:") and arn.endswith(kms_key_id)
    assert set(keys_in_use(escrow).values()) == {report.key}
    assert bucket_keys(escrow, deposits) == {report.key}
    assert report.configure[:2] == ["ESCROW_KEY_CUSTODY=aws-kms", f"ESCROW_KMS_KEY_ID={arn}"]
    assert report.destroyable == []  # the local key still wraps what the broker makes meanwhile
    assert plaintexts(local_broker) == before  # a broker still configured `local` reads KMS blobs

    meanwhile = make_deposits(local_broker, 1, first=10)
    assert bucket_keys(escrow, meanwhile) != {report.key}

    # Restarted with ESCROW_KEY_CUSTODY=aws-kms:
    kms_broker = broker(escrow, open_kms(arn), open_kms)
    assert plaintexts(kms_broker).keys() >= before.keys()  # and it reads local blobs
    final = rotate(kms_broker, settle_s=0)
    assert final.resumed and final.key == report.key and final.rewrapped == 1
    assert final.configure == [] and final.retired == report.retired
    assert report.retired[0].startswith("local:")
    assert f"{escrow.settings.key_file} (the local master key) and its trustee shares" in (
        final.destroyable
    )
    assert set(keys_in_use(escrow).values()) == {report.key}
    assert {k: v for k, v in plaintexts(kms_broker).items() if k in before} == before


def test_the_kms_rotation_is_on_the_audit_log(escrow, deposits, local_broker, kms_key_id, open_kms):
    report = rotate(local_broker, open_kms(kms_key_id), settle_s=0)
    with escrow.uow() as uow:
        leaves = list(
            uow.session.scalars(
                select(AuditEvent.leaf).where(AuditEvent.action.like("custody.rotation_%"))
            )
        )
    assert len(leaves) == 2 and all(report.key.encode() in leaf for leaf in leaves)
    assert b'"configuration_pending":true' in leaves[1]


def test_an_unusable_kms_key_stops_the_rotation_before_any_change(
    escrow, deposits, local_broker, moto_endpoint
):
    before = keys_in_use(escrow)
    missing = AwsKmsCustody(
        "alias/no-such-key", endpoint_url=moto_endpoint.url, session=moto_endpoint.session()
    )
    with pytest.raises(CustodyError, match="kms encrypt with key alias/no-such-key failed"):
        rotate(local_broker, missing, settle_s=0)
    assert keys_in_use(escrow) == before
    with escrow.uow() as uow:
        assert not uow.session.scalar(
            select(AuditEvent.seq).where(AuditEvent.action.like("custody.%"))
        )


def test_moving_to_another_kms_key_lists_the_old_one_for_deletion(
    escrow, deposits, local_broker, open_kms, moto_endpoint
):
    kms = moto_endpoint.client("kms")
    first_id, second_id = (kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2))
    first = rotate(local_broker, open_kms(first_id), settle_s=0)
    on_first = broker(escrow, open_kms(first.key.removeprefix("aws-kms:")), open_kms)
    assert rotate(on_first, settle_s=0).configure == []

    second = rotate(on_first, open_kms(second_id), settle_s=0)
    second_arn = second.key.removeprefix("aws-kms:")
    assert second.configure == [f"ESCROW_KMS_KEY_ID={second_arn}"]
    assert second.retired == [first.key]

    on_second = broker(escrow, open_kms(second_arn), open_kms)
    done = rotate(on_second, settle_s=0)
    assert done.configure == [] and done.rewrapped == 0
    old_arn = first.key.removeprefix("aws-kms:")
    assert f"KMS key {old_arn} (schedule its deletion; KMS waits 7-30 days)" in done.destroyable
    assert set(keys_in_use(escrow).values()) == {second.key}
