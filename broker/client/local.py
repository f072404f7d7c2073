"""What the client keeps on the lab's machine: its config directory and private files in it.

`$ESCROW_CONFIG_DIR`, else `$XDG_CONFIG_HOME/escrow`, else `~/.config/escrow`. Directories are
0700 and files 0600 because they hold pinned keys and, in resume journals, file keys.
Files are replaced atomically (write a temporary file, fsync, rename, fsync the directory), so
a crash at any instant leaves either the old or the new content, never a torn file.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from broker.durable import fsync_directory
from broker.errors import EscrowError


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("ESCROW_CONFIG_DIR"):
        return Path(env["ESCROW_CONFIG_DIR"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "escrow"


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) if needed; the directory itself is made 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data`, mode 0600."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(data):x}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def read_json(path: Path, what: str, lose: str) -> dict[str, Any]:
    """A client file written by `write_private`: {} if absent; damaged is an error that says
    what removing it would lose."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        raise EscrowError(
            f"{what} {path} is damaged (not JSON)",
            hint=f"restore it from a backup, or remove it ({lose}): {path}",
        ) from None
    return data if isinstance(data, dict) else {}


def remove_private(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        fsync_directory(path.parent)


