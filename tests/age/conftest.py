"""Fixtures of the age tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"


@pytest.fixture
def require_part(pytestconfig: pytest.Config) -> Callable[[bool, str], None]:
    """tests/conftest.py's `require_part` (skip locally, fail in CI when a part is missing).

    Taken from the conftest module pytest already loaded: `from conftest import …` is ambiguous
    because tests/*/conftest.py files are all imported under the name "conftest", and which one
    it finds depends on the order of collection.
    """
    manager = pytestconfig.pluginmanager
    root = manager.get_plugin(str(ROOT_CONFTEST))
    if root is None:  # registered under another spelling of the path (symlinks)
        root = next(
            p
            for p in manager.get_plugins()
            if getattr(p, "__file__", None) and Path(p.__file__).resolve() == ROOT_CONFTEST
        )
    return root.require_part
