"""Trustee shares of the local master key: SLIP-0039 word shares, via `shamir-mnemonic`.

SLIP-0039 (SatoshiLabs) splits a secret M-of-N with Shamir's scheme over GF(256) and writes each
share as words from a 1024-word list with an RS1024 checksum: a mistyped or swapped word is
caught (up to three wrong words for certain), and every share carries its split's random
identifier, so shares of different splits are told apart before anything is combined. A
32-byte master key gives 33-word shares. No passphrase: the trustees' quorum is the protection,
and SLIP-0039 opens with any passphrase (a wrong one silently gives another key), so a
passphrase would be one more thing to lose.

A share as printed for a trustee (the words on one line; `join` also takes them wrapped):

    weights-escrow master key share v1
    key-id: 0123456789abcdef
    share: 2 of 5 (any 3 rebuild the key)
    academic acid acrobat romp … (33 words)
"""

from __future__ import annotations

from dataclasses import dataclass

import shamir_mnemonic
from shamir_mnemonic.wordlist import WORD_INDEX_MAP

from broker.errors import InvalidInput

SHARE_HEADER = "weights-escrow master key share v1"
MAX_SHARES = 16  # SLIP-0039 stores the member index in 4 bits
MIN_THRESHOLD = 2  # 1-of-N would be N plain copies of the key (SLIP-0039 refuses it too)
_MIN_WORDS = 20  # SLIP-0039's shortest share (128-bit secret)


@dataclass(frozen=True)
class ShareText:
    """One share as read: the words, where they came from, and the key id it says it is of."""

    source: str  # "share-2.txt", "stdin line 3": named in errors instead of the words
    words: str
    key_id: str | None = None


@dataclass(frozen=True)
class _Decoded:
    text: ShareText
    share: shamir_mnemonic.Share


def split_secret(secret: bytes, shares: int, threshold: int) -> list[str]:
    """`shares` word shares of `secret`, any `threshold` of which rebuild it."""
    if not MIN_THRESHOLD <= threshold <= shares <= MAX_SHARES:
        raise InvalidInput(
            f"cannot split into {shares} shares with threshold {threshold}",
            hint=f"use {MIN_THRESHOLD} <= --threshold <= --shares <= {MAX_SHARES}, "
            "e.g. --shares 5 --threshold 3",
        )
    [group] = shamir_mnemonic.generate_mnemonics(1, [(threshold, shares)], secret)
    return group


def format_share(key_id: str, words: str, index: int, shares: int, threshold: int) -> str:
    return (
        f"{SHARE_HEADER}\nkey-id: {key_id}\n"
        f"share: {index} of {shares} (any {threshold} rebuild the key)\n{words}\n"
    )


def parse_share_file(source: str, text: str) -> ShareText:
    """A share file: the header lines are optional, every other line is words of one share."""
    key_id, words = None, []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line == SHARE_HEADER or line.startswith("share:"):
            continue
        if line.startswith("key-id:"):
            key_id = line.removeprefix("key-id:").strip()
            continue
        words.append(line)
    return ShareText(source, " ".join(words), key_id)


def parse_share_lines(source: str, text: str) -> list[ShareText]:
    """Shares typed one per line (e.g. on stdin); blank, comment and header lines are skipped."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = parse_share_file(f"{source} line {number}", line)
        if parsed.words:
            found.append(parsed)
    return found


def combine_shares(texts: list[ShareText]) -> bytes:
    """The secret the shares rebuild; a clear error for typos, mixed splits or too few shares.

    Errors name a share by its source and a word by its position, never the words."""
    decoded = [_decode(text) for text in texts]
    if not decoded:
        raise InvalidInput("no shares were given", hint="give the trustees' share files")
    _require_one_split(decoded)
    distinct = {d.share.index: d for d in decoded}
    threshold = decoded[0].share.member_threshold
    if len(distinct) < threshold:
        twice = f" ({len(decoded)} given, some twice)" if len(decoded) > len(distinct) else ""
        raise InvalidInput(
            f"too few shares: this split needs {threshold} different shares, got "
            f"{len(distinct)}{twice}",
            hint=f"collect {threshold - len(distinct)} more trustee share(s) of the same split",
        )
    chosen = [d.text.words for d in list(distinct.values())[:threshold]]
    try:  # SLIP-0039 wants exactly `threshold` shares of the group
        return shamir_mnemonic.combine_mnemonics(chosen)
    except shamir_mnemonic.MnemonicError:
        raise InvalidInput(
            "the shares do not combine (the split's digest does not match): one of them "
            "was altered, or they are of different splits with the same identifier",
            hint="check each share word by word against the trustee's original",
        ) from None


def _decode(text: ShareText) -> _Decoded:
    words = text.words.lower().split()
    unknown = [n for n, word in enumerate(words, start=1) if word not in WORD_INDEX_MAP]
    if unknown:
        raise InvalidInput(
            f"share from {text.source}: word {unknown[0]} is not a SLIP-0039 word"
            + (f" (nor are {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
            hint="the first four letters of every word are unique: check the spelling there",
        )
    if len(words) < _MIN_WORDS:
        raise InvalidInput(
            f"share from {text.source} has {len(words)} words; a share has at least {_MIN_WORDS}"
            " (33 for a master key)",
            hint="give the whole share: every word, in order",
        )
    try:
        share = shamir_mnemonic.Share.from_mnemonic(" ".join(words))
    except shamir_mnemonic.MnemonicError:
        raise InvalidInput(
            f"share from {text.source} fails its checksum: a word is mistyped, missing or out "
            "of order",
            hint="compare it word by word with the trustee's original",
        ) from None
    return _Decoded(text, share)


def _require_one_split(decoded: list[_Decoded]) -> None:
    first = decoded[0]
    for other in decoded[1:]:
        if other.share.common_parameters() != first.share.common_parameters() or (
            other.share.group_parameters() != first.share.group_parameters()
        ):
            raise InvalidInput(
                f"shares from {first.text.source} and {other.text.source} are of different "
                "splits and cannot be combined",
                hint="use shares of one `escrow admin key split` only (shares of an older split, "
                "or of another key, never combine with newer ones)",
            )
    for index in {d.share.index for d in decoded}:
        values = {d.share.value for d in decoded if d.share.index == index}
        if len(values) > 1:
            raise InvalidInput(
                f"two different shares claim the same place ({index + 1}) in the split",
                hint="one of them was altered; check both against the trustees' originals",
            )
