"""Fixtures shared by the whole suite.

Tests that need a live part (PostgreSQL, an S3 server, the Debian `age` tool, node) call
`require_part`. Locally a missing part skips the test with the reason; in CI
(`ESCROW_TEST_REQUIRE_ALL=1`) a missing part fails it, so CI can never pass by skipping.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("ESCROW_TEST_REQUIRE_ALL") == "1"


def require_part(available: bool, what: str) -> None:
    """Skip (locally) or fail (CI) when a live part a test needs is missing."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{what} is required (ESCROW_TEST_REQUIRE_ALL=1) but missing", pytrace=False)
    pytest.skip(f"{what} is missing")
