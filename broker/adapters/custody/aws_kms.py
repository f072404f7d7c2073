"""AWS KMS key custody: KMS Encrypt/Decrypt with the context as the KMS encryption context.

The encryption context is authenticated by KMS and written to CloudTrail with every Decrypt,
so each unwrap of a deposit identity appears on the cloud's own trail, naming the deposit, to
reconcile against the escrow's key-release events.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from broker.adapters.custody.blob import (
    BlobInfo,
    check_context,
    check_secret,
    decode_blob,
    encode_blob,
    field_bytes,
    require_backend,
)
from broker.errors import ConfigError, CustodyError

BACKEND = "aws-kms"


def arn_region(key_id: str) -> str | None:
    """The region in a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>); None otherwise."""
    parts = key_id.split(":")
    return parts[3] if len(parts) >= 6 and parts[0] == "arn" and parts[3] else None


class AwsKmsCustody:
    """KeyCustody with a symmetric AWS KMS key (or a KMS-compatible endpoint)."""

    name = BACKEND

    def __init__(
        self,
        key_id: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        *,
        session: boto3.session.Session | None = None,
    ) -> None:
        if not key_id:
            raise CustodyError("aws-kms custody needs a KMS key id, ARN or alias")
        self.key_id = key_id
        self.endpoint_url = endpoint_url
        session = session or boto3.session.Session()
        if region is None and endpoint_url and session.region_name is None:
            region = "us-east-1"  # a KMS-compatible test endpoint ignores it; SigV4 needs one
        try:
            self._client = session.client(
                "kms",
                region_name=region,
                endpoint_url=endpoint_url,
                config=Config(retries={"mode": "standard", "max_attempts": 5}),
            )
        except NoRegionError:
            raise ConfigError(
                "aws-kms custody needs a region",
                hint="set ESCROW_AWS_REGION (or AWS_DEFAULT_REGION), or use the key's ARN",
            ) from None
        self.region: str = self._client.meta.region_name

    def __repr__(self) -> str:
        return f"AwsKmsCustody({self.key_id!r})"

    def reads(self, info: BlobInfo) -> bool:
        """KMS Decrypt takes the key ARN from the blob: any key of this client's region."""
        return info.backend == BACKEND and arn_region(info.key_id) in (None, self.region)

    def wrap(self, secret: bytes, context: dict[str, str]) -> bytes:
        secret = check_secret(secret)
        context = check_context(context)
        with self._errors("encrypt with", self.key_id):
            response = self._client.encrypt(
                KeyId=self.key_id, Plaintext=secret, EncryptionContext=context
            )
        # The blob names the key ARN KMS used, not an alias that may later point elsewhere.
        return encode_blob(BACKEND, response["KeyId"], {"ct": response["CiphertextBlob"]})

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        context = check_context(context)
        info, document = decode_blob(blob)
        require_backend(info, BACKEND, self.key_id)
        ciphertext = field_bytes(document, "ct", info)
        with self._errors("decrypt with", info.key_id, context):
            response = self._client.decrypt(
                CiphertextBlob=ciphertext, EncryptionContext=context, KeyId=info.key_id
            )
        return response["Plaintext"]

    def check(self) -> str:
        with self._errors("describe", self.key_id):
            meta = self._client.describe_key(KeyId=self.key_id)["KeyMetadata"]
        if meta.get("KeyState") != "Enabled":
            raise CustodyError(f"KMS key {meta.get('Arn', self.key_id)} is {meta.get('KeyState')}")
        return f"aws-kms key {meta.get('Arn', self.key_id)}"

    @contextmanager
    def _errors(
        self, operation: str, key_id: str, context: dict[str, str] | None = None
    ) -> Iterator[None]:
        """Translate botocore errors: the operation and key id, never the secret."""
        where = f"kms {operation} key {key_id}"
        try:
            yield
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", "?"))
            message = str(e.response.get("Error", {}).get("Message", ""))[:200]
            if code in ("InvalidCiphertextException", "IncorrectKeyException") and context:
                described = ", ".join(f"{k}={v}" for k, v in sorted(context.items()))
                raise CustodyError(
                    f"{where} refused the blob with context {described}: wrong context, wrong "
                    "key, or the blob was altered",
                ) from None
            hint = {
                "AccessDeniedException": "grant the broker's role kms:Encrypt and kms:Decrypt",
                "NotFoundException": "check ESCROW_KMS_KEY_ID and the region",
                "DisabledException": "enable the KMS key",
                "KMSInvalidStateException": "the key is pending deletion or import; restore it",
            }.get(code, "")
            raise CustodyError(f"{where} failed: {code} {message}".rstrip(), hint=hint) from None
        except BotoCoreError as e:
            raise CustodyError(f"{where} failed: {e}") from None
