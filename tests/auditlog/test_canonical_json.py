"""canonical_json: the standard library's encoder where its output is RFC 8785's, `rfc8785`
elsewhere. Both must give the same bytes, or the same error, for every value."""

from __future__ import annotations

import random
from typing import Any

import pytest
import rfc8785

from broker.auditlog.leaf import canonical_json

# Characters where the two encoders could part: escapes, quotes, DEL, U+2028, the last BMP
# characters (UTF-16 order differs from code point order against the astral plane), astral
# characters, and a lone surrogate (not UTF-8).
TRICKY = ['"', "\\", "\b", "\f", "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "/", "\u2028",
          "\ud7ff", "\ue000", "\uffff", "\U0001f600", "\U00010000", "é", "\ud800", "a", "Z", "0"]


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(TRICKY) for _ in range(rng.randrange(4)))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "big", "float", "bool", "none"]
    if depth < 3:
        kinds += ["dict", "dict", "list", "tuple"]
    kind = rng.choice(kinds)
    if kind == "str":
        return random_text(rng)
    if kind == "int":
        return rng.randrange(-(2**53) + 1, 2**53)
    if kind == "big":
        return rng.choice([2**53 - 1, 2**53, -(2**53) + 1, -(2**53), 10**30])
    if kind == "float":
        return rng.choice([0.0, -0.0, 1.0, 1.5, 1e21, 1e-7, 123456789.125, rng.random()])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    items = [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == "list":
        return items
    if kind == "tuple":
        return tuple(items)
    return {random_text(rng): item for item in items}


def reference(value: Any) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(value)
    except ValueError as error:  # CanonicalizationError; UnicodeEncodeError for a bad key
        return type(error)


def ours(value: Any) -> bytes | type[Exception]:
    try:
        return canonical_json(value)
    except ValueError as error:  # CanonicalizationError; UnicodeEncodeError for a bad key
        return type(error)


def test_random_values_encode_exactly_as_rfc8785_does() -> None:
    rng = random.Random(8785)
    for _ in range(20_000):
        value = random_value(rng)
        assert ours(value) == reference(value), repr(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # RFC 8785 3.2.3: keys sort by UTF-16 code units, so U+1F600 (D83D DE00) before U+E000.
        ({"\ue000": 1, "\U0001f600": 2}, '{"😀":2,"\ue000":1}'.encode()),
        ({"b": [1, "\n", None], "a": True}, b'{"a":true,"b":[1,"\\n",null]}'),
        ({"x": 1.0, "y": 1e21}, b'{"x":1,"y":1e+21}'),
        ("\x1f\x7f", b'"\\u001f\x7f"'),
    ],
)
def test_known_forms(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected


@pytest.mark.parametrize("value", [2**53, float("nan"), "\ud800", {1: "not a string key"}, b"x"])
def test_what_rfc8785_refuses_is_refused(value: Any) -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_json(value)
