"""Fixtures for the key custody tests: an escrow holding a few deposits."""

from __future__ import annotations

import pytest

from .support import make_deposits


@pytest.fixture
def deposits(escrow) -> list[str]:
    return make_deposits(escrow, 4)
