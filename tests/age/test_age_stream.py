"""The STREAM payload: part-wise encryption, size helpers, damaged payloads."""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from broker import age
from broker.age.stream import CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, chunk_count

FILE_KEY = bytes(range(16))
NONCE = bytes(range(100, 116))


def whole_payload(plaintext: bytes) -> bytes:
    out = io.BytesIO()
    age.encrypt_payload(io.BytesIO(plaintext), out, FILE_KEY, nonce=NONCE)
    return out.getvalue()


def encrypt_part(plaintext: memoryview, first_chunk: int, final: bool) -> bytes:
    out = bytearray(len(plaintext) + 16 * chunk_count(len(plaintext)))
    n = age.PayloadEncryptor(FILE_KEY, NONCE).encrypt_chunks(
        plaintext, out, first_chunk, final=final
    )
    assert n == len(out)
    return bytes(out)


@pytest.mark.parametrize("size", [1, 7 * CHUNK_SIZE, 7 * CHUNK_SIZE + 1234])
def test_parts_encrypted_on_threads_equal_whole_file_encryption(size):
    plaintext = os.urandom(size)
    view = memoryview(plaintext)
    part = 2 * CHUNK_SIZE  # parts are whole numbers of chunks; the last one is final
    starts = list(range(0, size, part))
    with ThreadPoolExecutor(max_workers=4) as pool:
        parts = pool.map(
            lambda start: encrypt_part(
                view[start : start + part], start // CHUNK_SIZE, start + part >= size
            ),
            starts,
        )
        payload = NONCE + b"".join(parts)
    assert payload == whole_payload(plaintext)


def test_a_run_of_chunks_decrypts_at_its_position():
    plaintext = os.urandom(5 * CHUNK_SIZE + 10)
    payload = whole_payload(plaintext)
    body = memoryview(payload)[age.NONCE_SIZE :]
    decryptor = age.PayloadDecryptor(FILE_KEY, NONCE)
    out = bytearray(2 * CHUNK_SIZE)
    run = body[2 * ENCRYPTED_CHUNK_SIZE : 4 * ENCRYPTED_CHUNK_SIZE]
    assert decryptor.decrypt_chunks(run, out, 2, final=False) == 2 * CHUNK_SIZE
    assert out == plaintext[2 * CHUNK_SIZE : 4 * CHUNK_SIZE]
    with pytest.raises(age.PayloadError, match="chunk 3"):
        decryptor.decrypt_chunks(run, out, 3, final=False)  # wrong position
    last = body[5 * ENCRYPTED_CHUNK_SIZE :]
    tail = bytearray(10)
    assert decryptor.decrypt_chunks(last, tail, 5, final=True) == 10
    assert tail == plaintext[-10:]


def test_a_non_final_run_must_be_whole_chunks():
    encryptor = age.PayloadEncryptor(FILE_KEY, NONCE)
    with pytest.raises(ValueError, match="whole number of chunks"):
        encryptor.encrypt_chunks(bytes(100), bytearray(116), 0, final=False)
    with pytest.raises(ValueError, match="empty"):
        encryptor.encrypt_chunks(b"", bytearray(16), 3, final=True)
    with pytest.raises(ValueError, match="output buffer"):
        encryptor.encrypt_chunks(bytes(100), bytearray(100), 0, final=True)


@pytest.mark.parametrize(
    ("plaintext", "payload"),
    [
        (0, 16 + 16),
        (1, 16 + 1 + 16),
        (CHUNK_SIZE, 16 + CHUNK_SIZE + 16),
        (CHUNK_SIZE + 1, 16 + CHUNK_SIZE + 1 + 32),
        (2 * CHUNK_SIZE, 16 + 2 * CHUNK_SIZE + 32),
    ],
)
def test_size_helpers(plaintext, payload):
    assert age.encrypted_payload_size(plaintext) == payload
    assert age.plaintext_size(payload) == plaintext


@pytest.mark.parametrize(
    "payload",
    [0, 15, 16, 31, 16 + ENCRYPTED_CHUNK_SIZE + 16, 16 + ENCRYPTED_CHUNK_SIZE + 5],
)
def test_plaintext_size_refuses_impossible_sizes(payload):
    with pytest.raises(age.PayloadError, match="not a possible payload size"):
        age.plaintext_size(payload)


def test_size_helpers_agree_over_a_range():
    for size in [*range(0, 200), *range(CHUNK_SIZE - 100, 3 * CHUNK_SIZE + 100, 37)]:
        assert age.plaintext_size(age.encrypted_payload_size(size)) == size


def decrypt_payload_collecting(payload: bytes) -> tuple[bytes, age.AgeError | None]:
    out = io.BytesIO()
    try:
        age.decrypt_payload(io.BytesIO(payload), out, FILE_KEY)
    except age.AgeError as e:
        return out.getvalue(), e
    return out.getvalue(), None


def test_truncated_payload_fails_after_releasing_the_whole_chunks_before():
    plaintext = os.urandom(3 * CHUNK_SIZE + 100)
    payload = whole_payload(plaintext)
    released, error = decrypt_payload_collecting(payload[:-1])
    assert isinstance(error, age.PayloadError)
    assert released == plaintext[: 3 * CHUNK_SIZE]


def test_payload_cut_at_a_chunk_boundary_has_no_final_chunk():
    plaintext = os.urandom(3 * CHUNK_SIZE + 100)
    payload = whole_payload(plaintext)
    released, error = decrypt_payload_collecting(payload[: 16 + 2 * ENCRYPTED_CHUNK_SIZE])
    assert isinstance(error, age.PayloadError)
    assert "no final chunk" in str(error)
    assert released == plaintext[: 2 * CHUNK_SIZE]


def test_flipped_byte_in_the_payload_fails_at_its_chunk():
    plaintext = os.urandom(40 * CHUNK_SIZE)  # more than one read batch
    payload = bytearray(whole_payload(plaintext))
    payload[16 + 33 * ENCRYPTED_CHUNK_SIZE + 7] ^= 1
    released, error = decrypt_payload_collecting(bytes(payload))
    assert isinstance(error, age.PayloadError)
    assert "chunk 33" in str(error)
    assert released == plaintext[: 33 * CHUNK_SIZE]


def test_data_after_the_final_chunk_fails():
    plaintext = os.urandom(100)
    released, error = decrypt_payload_collecting(whole_payload(plaintext) + b"\x00")
    assert isinstance(error, age.PayloadError)
    assert released == b""


def test_missing_or_short_nonce_is_a_header_failure():
    for payload in (b"", bytes(15)):
        _, error = decrypt_payload_collecting(payload)
        assert isinstance(error, age.HeaderError)


def test_wrong_file_key_fails_the_first_chunk():
    payload = whole_payload(b"secret")
    with pytest.raises(age.PayloadError, match="chunk 0"):
        age.decrypt_payload(io.BytesIO(payload), io.BytesIO(), bytes(16))


def test_streaming_works_on_a_stream_without_readinto():
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._io = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._io.read(min(n, 1000) if n > 0 else n)  # short reads too

    plaintext = os.urandom(2 * CHUNK_SIZE + 3)
    out = io.BytesIO()
    age.encrypt_payload(ReadOnly(plaintext), out, FILE_KEY, nonce=NONCE)
    assert out.getvalue() == whole_payload(plaintext)
    result = io.BytesIO()
    age.decrypt_payload(ReadOnly(out.getvalue()), result, FILE_KEY)
    assert hashlib.sha256(result.getvalue()).digest() == hashlib.sha256(plaintext).digest()
