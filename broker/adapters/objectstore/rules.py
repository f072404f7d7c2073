"""Rules both object stores enforce, so a client that works on one works on the other.

The limits are Amazon S3's (the strictest peer): a client tested against the local store must not
meet a new refusal in production. Keys are checked by one function so that the local store's
"never leave the root" rule and the S3 store's key space agree.
"""

from __future__ import annotations

import re

from broker.errors import InvalidInput

# S3 multipart limits (docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html).
MIN_PART_NUMBER = 1
MAX_PART_NUMBER = 10_000
MIN_PART_SIZE = 5 * 1024 * 1024  # every part but the last
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
# SigV4 presigned URLs live at most 7 days; the local store's URLs follow the same bound.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
MAX_KEY_BYTES = 1024  # S3's limit, UTF-8 encoded
# Broker-side copies (mirror, repairs) send parts of at least this size: few requests, and one
# part is all the memory a copy holds.
MIN_COPY_PART_SIZE = 8 * 1024 * 1024


def copy_part_size(size: int) -> int:
    """The part size for copying an object of `size` bytes in at most MAX_PART_NUMBER parts,
    rounded up to a whole MiB (8 MiB parts up to 78 GiB; S3's 5 TiB objects in 525 MiB parts)."""
    mib = 1024 * 1024
    needed = -(-size // MAX_PART_NUMBER)
    return max(MIN_COPY_PART_SIZE, -(-needed // mib) * mib)


_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative bucket key, else raise InvalidInput.

    Safe: 1..1024 UTF-8 bytes of `/`-separated segments; no absolute path, backslash, NUL or
    control character; no empty segment (`a//b`, trailing `/`); no segment starting with `.`
    (this refuses `.` and `..`, and keeps the local store's hidden temp files out of the key
    space). The broker alone chooses keys (`deposits/<id>/files/0.payload`), so anything else is
    a bug or an attack and is refused rather than normalised.
    """
    if not isinstance(key, str) or not key:
        raise InvalidInput("object key is empty", hint="keys look like deposits/<id>/manifest.json")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidInput(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidInput(f"object key {key!r} is absolute; keys are relative to the store root")
    if "\\" in key:
        raise InvalidInput(f"object key {key!r} contains a backslash; use '/' between segments")
    if _CONTROL_CHARACTER.search(key):
        raise InvalidInput(f"object key {key!r} contains a control character")
    for segment in key.split("/"):
        if not segment:
            raise InvalidInput(f"object key {key!r} has an empty segment")
        if segment.startswith("."):
            raise InvalidInput(
                f"object key {key!r} has a segment starting with '.' ({segment!r}); "
                "'.', '..' and hidden names are not allowed"
            )
    return key


def check_part_number(part_number: int) -> int:
    if (
        isinstance(part_number, bool)
        or not isinstance(part_number, int)
        or not MIN_PART_NUMBER <= part_number <= MAX_PART_NUMBER
    ):
        raise InvalidInput(
            f"part number must be {MIN_PART_NUMBER}..{MAX_PART_NUMBER}, got {part_number!r}"
        )
    return part_number


def check_expires_in(expires_in: int) -> int:
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int)
        or not 1 <= expires_in <= MAX_PRESIGN_SECONDS
    ):
        raise InvalidInput(
            f"URL lifetime must be 1..{MAX_PRESIGN_SECONDS} seconds, got {expires_in!r}"
        )
    return expires_in


def normalise_etag(etag: str) -> str:
    """ETags are kept unquoted in our dataclasses; HTTP and S3 quote them."""
    return etag.strip().strip('"')


def check_part_list(part_numbers: list[int]) -> None:
    """A completion lists at least one part, in strictly ascending order (as S3 requires)."""
    if not part_numbers:
        raise InvalidInput("a multipart upload needs at least one part to complete")
    for n in part_numbers:
        check_part_number(n)
    for before, after in zip(part_numbers, part_numbers[1:], strict=False):
        if after <= before:
            raise InvalidInput(
                f"parts must be listed in ascending order without repeats; {after} follows {before}"
            )
