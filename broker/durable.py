"""Durable writes on a local file system, shared by the adapters (local store, local key
custody) and the client (its journal and downloaded files)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a created, renamed or removed entry of `directory` survive a crash: the directory
    entry is data too, and fsync of the file alone does not write it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
