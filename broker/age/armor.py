"""ASCII armor for age files: strict PEM (RFC 7468 §3) with label "AGE ENCRYPTED FILE".

Decoding is as strict as the spec asks, so armored files are not malleable: 64-column lines of
padded canonical base64, no headers, no empty lines, only the last line short, nothing but
whitespace before the BEGIN line or after the END line (at most 1 KiB of it). Lines may end with
LF or CRLF. Both directions stream in constant memory.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import BinaryIO

from broker.age.errors import ArmorError

BEGIN_LINE = b"-----BEGIN AGE ENCRYPTED FILE-----"
END_LINE = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS_PER_LINE = 64
BYTES_PER_LINE = COLUMNS_PER_LINE // 4 * 3  # 48
MAX_WHITESPACE = 1024  # as age: bounded whitespace around the block
_WHITESPACE = b" \t\r\n\v\f"
_FULL_LINE = re.compile(rb"[A-Za-z0-9+/]{64}")
_LAST_LINE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_LINE_LIMIT = COLUMNS_PER_LINE + 3  # a line, CRLF, and one byte more to see an overlong line


def _error(what: str) -> ArmorError:
    return ArmorError(
        f"age armor: {what}",
        hint="the armored (PEM) text was altered; copy it again exactly, BEGIN to END lines",
    )


def _strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


class ArmoredReader(io.RawIOBase):
    """Decodes an armored age file from `src` as a readable binary stream."""

    def __init__(self, src: BinaryIO) -> None:
        super().__init__()
        self._src = src
        self._started = False
        self._finished = False
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _line(self) -> bytes:
        line = self._src.readline(_LINE_LIMIT)
        if not line:
            raise _error("unexpected end of data before the END line")
        if len(line) == _LINE_LIMIT and not line.endswith(b"\n"):
            raise _error(f"a line is longer than {COLUMNS_PER_LINE} columns")
        return _strip_eol(line)

    def _begin(self) -> None:
        skipped = 0
        while True:
            line = self._src.readline(MAX_WHITESPACE + 1)
            if not line:
                raise _error("no BEGIN line found")
            if line.strip(_WHITESPACE):
                break
            skipped += len(line)
            if skipped > MAX_WHITESPACE:
                raise _error("too much whitespace before the BEGIN line")
        if _strip_eol(line) != BEGIN_LINE:
            raise _error(
                "the first line is not '-----BEGIN AGE ENCRYPTED FILE-----' "
                "(headers and other labels are not allowed)"
            )
        self._started = True

    def _drain(self) -> None:
        """After the END line: only whitespace, and not much of it, up to the end of data."""
        self._finished = True
        rest = self._src.read(MAX_WHITESPACE + 1)
        if rest.strip(_WHITESPACE):
            raise _error("data after the END line")
        if len(rest) > MAX_WHITESPACE:
            raise _error("too much whitespace after the END line")

    def _decode_more(self, want: int) -> bytes:
        """Decode up to about `want` bytes (whole lines); b"" at the end of the armor."""
        if not self._started:
            self._begin()
        full: list[bytes] = []
        last = b""
        while len(full) * BYTES_PER_LINE < want:
            line = self._line()
            if _FULL_LINE.fullmatch(line):
                full.append(line)
                continue
            if line == END_LINE:
                self._drain()
                break
            if not line or len(line) % 4 or not _LAST_LINE.fullmatch(line):
                raise _error("a line is not 64 columns of base64 and not a valid last line")
            try:
                last = base64.b64decode(line, validate=True)
            except binascii.Error:
                raise _error("invalid base64 on the last line") from None
            if base64.b64encode(last) != line:
                raise _error("the base64 on the last line is not canonical")
            if self._line() != END_LINE:
                raise _error("a short line is not followed by the END line")
            self._drain()
            break
        data = base64.b64decode(b"".join(full)) if full else b""
        return data + last

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        dst = memoryview(buffer).cast("B")
        if not self._pending and not self._finished:
            self._pending = memoryview(self._decode_more(max(len(dst), BYTES_PER_LINE)))
        n = min(len(dst), len(self._pending))
        dst[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class ArmoredWriter:
    """Encodes to `dst` as an armored age file; call close() to write the END line."""

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self._tail = b""
        self._started = False
        self._closed = False

    def _start(self) -> None:
        if not self._started:
            self._dst.write(BEGIN_LINE + b"\n")
            self._started = True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed ArmoredWriter")
        self._start()
        buf = self._tail + bytes(data)
        whole = len(buf) - len(buf) % BYTES_PER_LINE
        self._tail = buf[whole:]
        if whole:
            text = base64.b64encode(buf[:whole])
            self._dst.write(
                b"".join(
                    text[i : i + COLUMNS_PER_LINE] + b"\n"
                    for i in range(0, len(text), COLUMNS_PER_LINE)
                )
            )
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._start()
        if self._tail:
            self._dst.write(base64.b64encode(self._tail) + b"\n")
        self._dst.write(END_LINE + b"\n")
        self._closed = True


def armor_encode(data: bytes) -> bytes:
    out = io.BytesIO()
    writer = ArmoredWriter(out)
    writer.write(data)
    writer.close()
    return out.getvalue()


def armor_decode(text: bytes) -> bytes:
    return ArmoredReader(io.BytesIO(text)).read()


def looks_armored(prefix: bytes) -> bool:
    """Whether the first bytes of a file are the start of an armored file."""
    return prefix.lstrip(_WHITESPACE).startswith(b"-----BEGIN")
