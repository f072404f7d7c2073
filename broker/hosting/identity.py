"""A model worker's age identity held by the worker host's key custody.

`escrow hosted worker identity --out FILE` makes the identity in memory, wraps it with the host's
custody (the one its ESCROW_* settings name, built as the broker builds its own) under the
context {"purpose": "model-worker identity"}, and writes only the wrapped blob (0600). The
plaintext identity never touches disk. `escrow model-worker --identity FILE` reads either such a
blob (unwrapped into memory) or a plain age identity file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker import age
from broker.adapters.custody.base import KeyCustody
from broker.adapters.custody.blob import MAX_BLOB_BYTES, decode_blob
from broker.errors import CustodyError, InvalidInput

CONTEXT = {"purpose": "model-worker identity"}
KINDS = ("post-quantum", "x25519")


@dataclass(frozen=True)
class WrappedIdentity:
    recipient: str  # what `escrow hosted worker create NAME --recipient` takes
    blob: bytes  # the custody envelope; holds no secret in clear


def wrap_new_identity(custody: KeyCustody, kind: str = "post-quantum") -> WrappedIdentity:
    """A new age identity of `kind`, wrapped by `custody`; the plaintext stays in memory."""
    from broker.client import keygen

    if kind not in KINDS:
        raise InvalidInput(f"a model worker's identity is an age key, not {kind!r}",
                           hint=f"one of: {', '.join(KINDS)}")
    new = keygen.generate(kind)
    return WrappedIdentity(new.recipient, custody.wrap(new.secret.encode("utf-8"), CONTEXT))


def is_wrapped(data: bytes) -> bool:
    """Whether `data` is a custody envelope (JSON with v, backend, key_id), not an age file."""
    if not data.lstrip().startswith(b"{") or len(data) > MAX_BLOB_BYTES:
        return False
    try:
        decode_blob(data.strip())
    except CustodyError:
        return False
    return True


def load_worker_identities(path: Path,
                           custody: Callable[[], KeyCustody]) -> list[age.Identity]:
    """The identities in `path`: a custody-wrapped blob (opened with `custody()`, built only
    then) or a plain age identity file."""
    from broker.client.fetch.manifest import load_identities

    try:
        data = path.read_bytes()
    except OSError as error:
        raise InvalidInput(f"cannot read identity file {path}: {error.strerror}",
                           hint="give the file `escrow hosted worker identity --out` wrote, "
                           "or a plain age identity file") from None
    if not is_wrapped(data):
        return load_identities(path)
    try:
        secret = custody().unwrap(data.strip(), CONTEXT)
    except CustodyError as error:
        # The custody's own message names keys and context, never the secret.
        raise CustodyError(
            f"cannot unwrap the model worker identity {path}: {error.message}",
            hint="run the worker with the key custody that wrapped it (the same ESCROW_KEY_FILE, "
            "or ESCROW_KEY_CUSTODY and ESCROW_KMS_KEY_ID, as `escrow hosted worker identity` "
            "ran with); a blob wrapped for another purpose is not a worker identity",
        ) from None
    try:
        return age.parse_identities(secret.decode("utf-8"))
    except (UnicodeDecodeError, age.AgeError):
        raise InvalidInput(
            f"the wrapped blob {path} does not hold an age identity",
            hint="make one with `escrow hosted worker identity --out FILE`",
        ) from None
