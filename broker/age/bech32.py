"""Bech32 (BIP-173) without the 90-character limit, as the age spec requires.

age1pq1… recipients are 1216 bytes, far beyond BIP-173's length limit; everything else (charset,
checksum over the lowercase string, no mixed case, at most 4 zero padding bits) is BIP-173.
"""

from __future__ import annotations

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_LEN = 6


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GENERATOR[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or (acc << (to_bits - bits)) & maxv:
        raise ValueError("invalid bech32 padding")
    return out


def encode(hrp: str, data: bytes, *, upper: bool = False) -> str:
    """Encode `data` under human-readable part `hrp`; the checksum covers the lowercase form."""
    hrp = hrp.lower()
    if not hrp or any(not 33 <= ord(c) <= 126 for c in hrp):
        raise ValueError("invalid bech32 human-readable part")
    words = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod(_hrp_expand(hrp) + words + [0] * _CHECKSUM_LEN) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_LEN)]
    text = hrp + "1" + "".join(CHARSET[w] for w in words + checksum)
    return text.upper() if upper else text


def decode(text: str) -> tuple[str, bytes]:
    """Decode a Bech32 string to (lowercase hrp, data); raises ValueError saying what is wrong."""
    if any(not 33 <= ord(c) <= 126 for c in text):
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
    data = _convert_bits(words[:-_CHECKSUM_LEN], 5, 8, pad=False)
    return hrp, bytes(data)
