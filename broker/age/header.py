"""The textual age header: version line, recipient stanzas, MAC (C2SP age, "Header").

    age-encryption.org/v1
    -> X25519 <share>
    <body, base64 wrapped at 64 columns, ending with a line shorter than 64>
    --- <HMAC-SHA-256 of everything up to and including "---">

Parsing is strict (ABNF of the spec): LF line endings only, canonical unpadded base64, arguments
of printable ASCII, every stanza ends with a short (possibly empty) body line. A parsed header
keeps the exact bytes it was read from, so the MAC is checked over what was read, not over a
re-serialisation.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from broker.age.errors import HeaderError, HeaderMACError
from broker.age.primitives import b64decode, b64encode, hkdf_sha256, hmac_sha256

VERSION_PREFIX = b"age-encryption.org/"
VERSION_LINE = b"age-encryption.org/v1\n"
STANZA_PREFIX = b"->"
MAC_PREFIX = b"---"
COLUMNS_PER_LINE = 64  # body lines are wrapped at 64 base64 columns
BYTES_PER_LINE = COLUMNS_PER_LINE // 4 * 3  # 48 bytes fill one full body line
MAC_B64_LEN = 43  # ABNF: end = "--- " 43base64char LF
HEADER_KEY_INFO = b"header"
# Not in the spec: a bound so that a hostile "header" cannot make us buffer without limit.
# Real headers are a few KiB (a hybrid stanza is ~1.6 KiB).
MAX_HEADER_SIZE = 1 << 20


# ABNF: arbitrary string = 1*VCHAR (one or more printable ASCII characters, no space)
_ARGUMENT = re.compile(r"[\x21-\x7e]+")
_ARGUMENT_BYTES = re.compile(rb"[\x21-\x7e]+")


def _is_valid_argument(arg: str) -> bool:
    return _ARGUMENT.fullmatch(arg) is not None


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza: a type (first argument), further arguments, and a binary body."""

    type: str
    args: tuple[str, ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        for arg in (self.type, *self.args):
            if not _is_valid_argument(arg):
                raise HeaderError(
                    f"age stanza: argument {arg!r} is empty or has characters other than "
                    "printable ASCII",
                    hint="stanza arguments are non-empty and contain no spaces or control bytes",
                )

    def encode(self) -> bytes:
        """The stanza lines, ending with a body line shorter than 64 columns (maybe empty)."""
        line = " ".join((STANZA_PREFIX.decode(), self.type, *self.args)) + "\n"
        body = b64encode(self.body)
        lines = [body[i : i + COLUMNS_PER_LINE] for i in range(0, len(body), COLUMNS_PER_LINE)]
        if not lines or len(lines[-1]) == COLUMNS_PER_LINE:
            lines.append("")  # the final line must be short, so a full last line needs an empty one
        return (line + "".join(part + "\n" for part in lines)).encode("ascii")


@dataclass(frozen=True)
class Header:
    """A parsed or built header. `raw` is the exact encoding, MAC line included."""

    stanzas: tuple[Stanza, ...]
    mac: bytes
    raw: bytes = field(repr=False)

    @property
    def mac_message(self) -> bytes:
        """The bytes the MAC covers: everything up to and including the `---` mark."""
        return self.raw[: self.raw.rindex(b"\n" + MAC_PREFIX + b" ") + 1 + len(MAC_PREFIX)]

    def encode(self) -> bytes:
        return self.raw

    @property
    def stanza_types(self) -> tuple[str, ...]:
        return tuple(s.type for s in self.stanzas)

    def verify_mac(self, file_key: bytes) -> None:
        """Raise HeaderMACError unless the MAC matches (compared in constant time)."""
        expected = header_mac(file_key, self.mac_message)
        if not hmac.compare_digest(expected, self.mac):
            raise HeaderMACError(
                "age header: the MAC does not match; the header was modified after it was made",
                hint="fetch the file again from a trusted copy",
            )


def header_mac(file_key: bytes, mac_message: bytes) -> bytes:
    # Why a key derived from the file key: only someone who can unwrap the file key can make a
    # valid header, and the "header" info separates this key from the payload key.
    key = hkdf_sha256(file_key, salt=b"", info=HEADER_KEY_INFO)
    return hmac_sha256(key, mac_message)


def build_header(file_key: bytes, stanzas: Iterable[Stanza]) -> Header:
    """Serialise stanzas and MAC them with the file key."""
    stanzas = tuple(stanzas)
    if not stanzas:
        raise HeaderError(
            "age header: no recipient stanzas", hint="encrypt to at least one recipient"
        )
    message = VERSION_LINE + b"".join(s.encode() for s in stanzas) + MAC_PREFIX
    mac = header_mac(file_key, message)
    raw = message + b" " + b64encode(mac).encode("ascii") + b"\n"
    return Header(stanzas=stanzas, mac=mac, raw=raw)


def _error(what: str) -> HeaderError:
    return HeaderError(
        f"age header: {what}", hint="the file is not a valid age file or was damaged"
    )


def _parse(read_line: Callable[[int], bytes]) -> Header:
    """Parse lines from `read_line(limit)` (which returns b"" at end of input)."""
    raw = bytearray()

    def next_line() -> bytes:
        line = read_line(MAX_HEADER_SIZE - len(raw) + 1)
        raw.extend(line)
        if len(raw) > MAX_HEADER_SIZE:
            raise _error(f"header is longer than {MAX_HEADER_SIZE} bytes")
        if not line.endswith(b"\n"):
            raise _error("unexpected end of data inside the header")
        return line

    first = read_line(len(VERSION_LINE))
    raw.extend(first)
    if not first:
        raise _error("the file is empty")
    if first != VERSION_LINE:
        if first.startswith(VERSION_PREFIX):
            raise _error("unsupported version line (only age-encryption.org/v1 is supported)")
        raise _error("the data does not start with 'age-encryption.org/v1'")

    stanzas: list[Stanza] = []
    while True:
        line = next_line()
        if line.startswith(MAC_PREFIX):
            if not stanzas:
                raise _error("no recipient stanzas before the MAC line")
            mac_text = line[len(MAC_PREFIX) + 1 : -1]
            if line[len(MAC_PREFIX) : len(MAC_PREFIX) + 1] != b" " or len(mac_text) != MAC_B64_LEN:
                raise _error("malformed MAC line")
            try:
                mac = b64decode(mac_text)
            except ValueError as e:
                raise _error(f"malformed MAC line ({e})") from None
            return Header(stanzas=tuple(stanzas), mac=mac, raw=bytes(raw))
        if line.startswith(STANZA_PREFIX):
            stanzas.append(_parse_stanza(line, next_line))
            continue
        raise _error("unexpected line (expected a stanza '->' or the MAC line '---')")


def _parse_stanza(arg_line: bytes, next_line: Callable[[], bytes]) -> Stanza:
    parts = arg_line[:-1].split(b" ")
    if parts[0] != STANZA_PREFIX or len(parts) < 2:
        raise _error("malformed stanza line (expected '-> type [arguments]')")
    if not all(_ARGUMENT_BYTES.fullmatch(part) for part in parts[1:]):
        raise _error("stanza argument is empty or has characters other than printable ASCII")
    args = [p.decode("ascii") for p in parts[1:]]
    body = bytearray()
    while True:
        text = next_line()[:-1]
        if len(text) > COLUMNS_PER_LINE:
            raise _error("stanza body line is longer than 64 columns")
        try:
            body.extend(b64decode(text))
        except ValueError as e:
            raise _error(f"stanza body is not canonical unpadded base64 ({e})") from None
        if len(text) < COLUMNS_PER_LINE:  # the first short line (maybe empty) ends the body
            return Stanza(type=args[0], args=tuple(args[1:]), body=bytes(body))


def parse_header(data: bytes) -> Header:
    """Parse a header that is exactly `data` (no payload after it)."""
    pos = 0

    def read_line(limit: int) -> bytes:
        nonlocal pos
        end = data.find(b"\n", pos, pos + limit)
        end = min(len(data), pos + limit) if end < 0 else end + 1
        line = data[pos:end]
        pos = end
        return line

    header = _parse(read_line)
    if pos != len(data):
        raise _error("unexpected data after the MAC line")
    return header


def read_header(stream: BinaryIO) -> Header:
    """Read a header from a binary stream, leaving the stream exactly at the payload nonce."""
    return _parse(stream.readline)
