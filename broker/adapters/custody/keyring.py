"""A keyring: wrap with the configured custody, unwrap each blob with the key its envelope names.

This is what lets a key rotation run under a live broker. While `escrow admin key rotate`
re-wraps secrets (local key A to local key B, or local to AWS KMS), the database holds blobs of
both keys; every blob names its backend and key id, so the broker opens each with the right one:

    local blob, key id = the key file's      the key file
    local blob, another key id               the retired key file `<key file>.<key id>`
    aws-kms blob                             KMS Decrypt with the key ARN the blob names

Readers for a backend other than the configured one are opened on first use, so a broker still
configured for `local` reads blobs a rotation to KMS has written, and a broker switched to
`aws-kms` still reads local blobs until the rotation has re-wrapped them all.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.adapters.custody.base import KeyCustody
from broker.adapters.custody.blob import BlobInfo, describe_blob
from broker.errors import CustodyError

ReaderFactory = Callable[[BlobInfo], KeyCustody]


class Keyring:
    """KeyCustody that wraps with `current` and unwraps with whichever key a blob names."""

    def __init__(self, current: KeyCustody, open_reader: ReaderFactory) -> None:
        self.current = current
        self._open_reader = open_reader
        self._readers: list[KeyCustody] = []

    def __repr__(self) -> str:
        return f"Keyring({self.current!r})"

    @property
    def name(self) -> str:
        return self.current.name

    @property
    def key_id(self) -> str:
        return self.current.key_id

    def wrap(self, secret: bytes, context: dict[str, str]) -> bytes:
        return self.current.wrap(secret, context)

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        return self.reader(describe_blob(blob)).unwrap(blob, context)

    def check(self) -> str:
        return self.current.check()

    def reader(self, info: BlobInfo) -> KeyCustody:
        """The custody that opens blobs like `info` (opened once, then kept)."""
        for custody in (self.current, *self._readers):
            if _reads(custody, info):
                return custody
        reader = self._open_reader(info)
        if not _reads(reader, info):
            raise CustodyError(
                f"no custody reads blobs of {info.backend} key {info.key_id}",
                hint="this broker knows the backends 'local' and 'aws-kms'",
            )
        self._readers.append(reader)
        return reader


def _reads(custody: KeyCustody, info: BlobInfo) -> bool:
    reads = getattr(custody, "reads", None)  # a backend without it reads only its own blobs
    if reads is not None:
        return bool(reads(info))
    return custody.name == info.backend and custody.key_id == info.key_id
