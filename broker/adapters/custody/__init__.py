"""Key custody adapters, chosen by `ESCROW_KEY_CUSTODY`, behind a keyring that reads old keys."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from broker.adapters.custody.base import KeyCustody
from broker.adapters.custody.blob import BlobInfo, describe_blob
from broker.adapters.custody.keyring import Keyring
from broker.errors import ConfigError, CustodyError

__all__ = ["BlobInfo", "KeyCustody", "Keyring", "describe_blob", "open_backend", "open_custody"]

def open_custody(
    kind: str = "local",
    *,
    data_dir: Path,
    key_file: Path | None = None,
    kms_key_id: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> Keyring:
    """The custody backend `kind` names, in a keyring that also opens blobs of older keys.

    local     the master key file (default `data_dir/keys/master.key`, made by `escrow init`;
              outside the objects root, which is `data_dir/objects`)
    aws-kms   the KMS key `kms_key_id`, in `region`, at `endpoint_url` if not AWS itself
    """
    key_file = key_file or data_dir / "keys" / "master.key"
    current = open_backend(
        kind, key_file=key_file, kms_key_id=kms_key_id, region=region, endpoint_url=endpoint_url
    )
    reader = partial(_open_reader, key_file=key_file, region=region, endpoint_url=endpoint_url)
    return Keyring(current, reader)


def open_backend(
    kind: str,
    *,
    key_file: Path,
    kms_key_id: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> KeyCustody:
    """One backend alone: what new blobs are wrapped with."""
    if kind in ("", "local"):
        from broker.adapters.custody.local import LocalCustody

        return LocalCustody(key_file)
    if kind == "aws-kms":
        if not kms_key_id:
            raise ConfigError(
                "aws-kms key custody needs a KMS key id",
                hint="set ESCROW_KMS_KEY_ID to the key's id, ARN or alias",
            )
        # Imported here: boto3 takes a noticeable time to import.
        from broker.adapters.custody.aws_kms import AwsKmsCustody, arn_region

        region = region or arn_region(kms_key_id)  # a key ARN names its region
        return AwsKmsCustody(kms_key_id, region=region, endpoint_url=endpoint_url)
    raise ConfigError(f"unknown key custody {kind!r}", hint="use 'local' (a key file) or 'aws-kms'")


def _open_reader(
    info: BlobInfo, *, key_file: Path, region: str | None, endpoint_url: str | None
) -> KeyCustody:
    """A custody for a blob of a backend other than the configured one."""
    if info.backend == "local":
        from broker.adapters.custody.local import LocalCustody

        if not key_file.exists():
            raise CustodyError(
                f"blob was wrapped by local key {info.key_id}, and there is no key file "
                f"{key_file} to read it with",
                hint="restore the master key file (or rebuild it with `escrow admin key join`) "
                "and point ESCROW_KEY_FILE at it",
            )
        return LocalCustody(key_file)
    if info.backend == "aws-kms":
        from broker.adapters.custody.aws_kms import AwsKmsCustody, arn_region

        return AwsKmsCustody(
            info.key_id,
            region=arn_region(info.key_id) or region,
            endpoint_url=endpoint_url,
        )
    raise CustodyError(
        f"blob was wrapped by unknown key custody {info.backend!r}",
        hint="this broker reads 'local' and 'aws-kms' blobs; upgrade it to read others",
    )
