"""Model patterns of a policy (`models: ["acme-ai/*"]`): ORG/NAME or ORG/PREFIX*, checked,
matched, and ranked (an exact name beats every wildcard). Pure."""

from __future__ import annotations

import re

__all__ = [
    "SLUG",
    "WILDCARD",
    "pattern_key",
    "pattern_matches",
    "pattern_problem",
    "pattern_specificity",
]

WILDCARD = "*"

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")  # an organisation or model name
_LITERAL = re.compile(r"^[a-z0-9._-]*$")


def pattern_problem(pattern: str, organisation: str) -> str | None:
    """Why `pattern` is not a valid model pattern of `organisation`, or None."""
    org, sep, rest = pattern.partition("/")
    if not sep:
        return f"model pattern {pattern!r} is not ORG/NAME or ORG/PREFIX*"
    if org != organisation:
        return (
            f"model pattern {pattern!r} is outside organisation {organisation!r}: "
            f"a policy only names its own organisation's models ({organisation}/…)"
        )
    literal = rest[:-1] if rest.endswith(WILDCARD) else rest
    if WILDCARD in literal or not _LITERAL.match(literal):
        return (
            f"model pattern {pattern!r} is not valid: use lowercase letters, digits, "
            f"'.', '_' or '-', and at most one '*', at the end"
        )
    if not rest.endswith(WILDCARD) and not SLUG.match(rest):
        return f"model pattern {pattern!r} does not name a valid model"
    return None


def pattern_key(pattern: str) -> str:
    """The key of a pattern's line in `Policy.lines`."""
    return "models:" + pattern


def pattern_matches(pattern: str, model: str) -> bool:
    if pattern.endswith(WILDCARD):
        return model.startswith(pattern[:-1])
    return model == pattern


def pattern_specificity(pattern: str) -> tuple[int, int]:
    """Exact names beat every wildcard; among wildcards, the longer literal prefix wins."""
    if pattern.endswith(WILDCARD):
        return (0, len(pattern) - 1)
    return (1, len(pattern))
