"""Key custody adapters, chosen by `ESCROW_KEY_CUSTODY`."""

from __future__ import annotations

from pathlib import Path

from broker.adapters.custody.base import KeyCustody
from broker.adapters.custody.blob import BlobInfo, describe_blob
from broker.errors import ConfigError

__all__ = ["BlobInfo", "KeyCustody", "describe_blob", "open_custody"]


def open_custody(
    kind: str = "local",
    *,
    data_dir: Path,
    key_file: Path | None = None,
    kms_key_id: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> KeyCustody:
    """The custody backend `kind` names.

    local     the master key file (default `data_dir/keys/master.key`, made by `escrow init`;
              outside the objects root, which is `data_dir/objects`)
    aws-kms   the KMS key `kms_key_id`, in `region`, at `endpoint_url` if not AWS itself
    """
    if kind in ("", "local"):
        from broker.adapters.custody.local import LocalCustody

        return LocalCustody(key_file or data_dir / "keys" / "master.key")
    if kind == "aws-kms":
        if not kms_key_id:
            raise ConfigError(
                "aws-kms key custody needs a KMS key id",
                hint="set ESCROW_KMS_KEY_ID to the key's id, ARN or alias",
            )
        # Imported here: boto3 takes a noticeable time to import.
        from broker.adapters.custody.aws_kms import AwsKmsCustody

        return AwsKmsCustody(kms_key_id, region=region, endpoint_url=endpoint_url)
    raise ConfigError(f"unknown key custody {kind!r}", hint="use 'local' (a key file) or 'aws-kms'")
