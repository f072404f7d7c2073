"""Bech32 (BIP-173) without the 90-character limit, as the age spec requires.

age1pq1… recipients are 1216 bytes, far beyond BIP-173's length limit; everything else (charset,
checksum over the lowercase string, no mixed case, at most 4 zero padding bits) is BIP-173.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_LEN = 6
# The generator terms to fold in for each value of the checksum's top 5 bits (BIP-173's inner
# loop, done once here): an age1pq1 recipient is ~1,950 characters, checked on every parse.
_GENERATOR_SUMS = tuple(
    functools.reduce(operator.xor, (g for i, g in enumerate(_GENERATOR) if top >> i & 1), 0)
    for top in range(32)
)
_WORD_BITS = tuple(format(word, "05b") for word in range(32))


def _polymod(values: Iterable[int]) -> int:
    chk = 1
    for value in values:
        chk = ((chk & 0x1FFFFFF) << 5) ^ value ^ _GENERATOR_SUMS[chk >> 25]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _to_words(data: bytes) -> list[int]:
    """8-bit bytes as 5-bit words, the last one padded with zero bits."""
    bits = format(int.from_bytes(data, "big"), f"0{len(data) * 8}b") if data else ""
    bits += "0" * (-len(bits) % 5)
    return [int(bits[i : i + 5], 2) for i in range(0, len(bits), 5)]


def _from_words(words: list[int]) -> bytes:
    """5-bit words back to bytes; at most 4 padding bits, all zero (BIP-173)."""
    padding = len(words) * 5 % 8
    bits = "".join(map(_WORD_BITS.__getitem__, words))
    if padding >= 5 or "1" in bits[len(bits) - padding :]:
        raise ValueError("invalid bech32 padding")
    whole = bits[: len(bits) - padding]
    return int(whole, 2).to_bytes(len(whole) // 8, "big") if whole else b""


def encode(hrp: str, data: bytes, *, upper: bool = False) -> str:
    """Encode `data` under human-readable part `hrp`; the checksum covers the lowercase form."""
    hrp = hrp.lower()
    if not hrp or not _printable(hrp):
        raise ValueError("invalid bech32 human-readable part")
    words = _to_words(data)
    polymod = _polymod(_hrp_expand(hrp) + words + [0] * _CHECKSUM_LEN) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_LEN)]
    text = hrp + "1" + "".join(CHARSET[w] for w in words + checksum)
    return text.upper() if upper else text


def decode(text: str) -> tuple[str, bytes]:
    """Decode a Bech32 string to (lowercase hrp, data); raises ValueError saying what is wrong."""
    if not _printable(text):
        raise ValueError("invalid character in bech32 string")
    if text.lower() != text and text.upper() != text:
        raise ValueError("bech32 string mixes upper and lower case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 1 + _CHECKSUM_LEN > len(text):
        raise ValueError("bech32 separator or checksum missing")
    hrp = text[:pos]
    try:
        words = [_CHARSET_REV[c] for c in text[pos + 1 :]]
    except KeyError:
        raise ValueError("invalid character in bech32 data") from None
    if _polymod(_hrp_expand(hrp) + words) != 1:
        raise ValueError("invalid bech32 checksum")
    return hrp, _from_words(words[:-_CHECKSUM_LEN])


def _printable(text: str) -> bool:
    """Only the characters BIP-173 allows anywhere: ASCII 33 to 126."""
    return text.isascii() and text.isprintable() and " " not in text
