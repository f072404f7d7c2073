"""The verification of one payload (`check_payload`): decrypt, size and SHA-256, with the hash on
a thread of its own. Payloads of several batches (1 MiB each), so the batches' order and the
buffer each one is copied from matter."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from broker import age
from broker.services.verification import check_payload

SIZE = 5 * 1024 * 1024 + 12_345  # five whole batches and a partial sixth


@pytest.fixture(scope="module")
def sample() -> tuple[bytes, bytes, bytes]:
    """(file key, plaintext, payload)."""
    key, plain = os.urandom(16), os.urandom(SIZE)
    payload = io.BytesIO()
    age.encrypt_payload(io.BytesIO(plain), payload, key)
    return key, plain, payload.getvalue()


def test_a_payload_of_many_batches_checks_against_its_sha256(sample: tuple[bytes, bytes, bytes]
                                                             ) -> None:
    key, plain, payload = sample
    digest = hashlib.sha256(plain).hexdigest()
    assert check_payload(io.BytesIO(payload), key, SIZE, digest) == ""


def test_another_sha256_is_named_with_the_one_found(sample: tuple[bytes, bytes, bytes]) -> None:
    key, plain, payload = sample
    problem = check_payload(io.BytesIO(payload), key, SIZE, "0" * 64)
    assert problem == f"SHA-256 is {hashlib.sha256(plain).hexdigest()}, expected {'0' * 64}"


def test_a_damaged_late_chunk_stops_it_after_the_good_prefix(sample: tuple[bytes, bytes, bytes]
                                                             ) -> None:
    key, plain, payload = sample
    damaged = bytearray(payload)
    damaged[-100] ^= 1  # in the last chunk
    problem = check_payload(io.BytesIO(bytes(damaged)), key, SIZE,
                            hashlib.sha256(plain).hexdigest())
    assert problem.startswith("payload does not decrypt after ")
    assert "chunk" in problem


def test_a_shorter_plaintext_is_named_by_its_size(sample: tuple[bytes, bytes, bytes]) -> None:
    key, plain, _ = sample
    payload = io.BytesIO()
    age.encrypt_payload(io.BytesIO(plain[:-1]), payload, key)
    problem = check_payload(io.BytesIO(payload.getvalue()), key, SIZE,
                            hashlib.sha256(plain).hexdigest())
    assert problem == f"size is {SIZE - 1} bytes, expected {SIZE}"
