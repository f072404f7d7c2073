"""The resume state of fetches into one --out: which deposit the .part files belong to, and which
finished files were verified (see the package's docstring)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from broker.client.local import config_dir, private_dir, write_private
from broker.errors import (
    Conflict,
)

STATE_FILE = ".escrow-fetch.json"
STATE_VERSION = 1


def state_path(out: Path, directory: Path | None = None) -> Path:
    """The state file of fetches into `out`: `<config>/fetch/<hash of out's real path>.json`."""
    name = hashlib.sha256(os.fsencode(out.resolve())).hexdigest()[:32]
    return (directory or config_dir()) / "fetch" / f"{name}.json"


class FetchState:
    """The fetch state of one --out (0600, in the config directory, see `state_path`): the
    deposit of the .part files, and the files verified.

    Locked for the life of the fetch: two fetches into one directory would write one .part twice.
    """

    def __init__(
        self, out: Path, deposit_id: str, age_files: bool, directory: Path | None = None
    ) -> None:
        self.path = state_path(out, directory)
        private_dir(self.path.parent)
        self.deposit_id, self.age_files = deposit_id, age_files
        self.done: dict[str, dict[str, Any]] = {}
        self.partial: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        fd = os.open(
            self.path.with_suffix(".lock"),
            os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
            0o600,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Conflict(
                f"another `escrow fetch` is writing into {out}",
                hint="wait for it to finish (or stop it), then run again",
            ) from None
        self._fd: int | None = fd
        legacy = out / STATE_FILE  # where clients before issue 15 kept it
        source = self.path if self.path.exists() else legacy
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            data = {}
        if (
            isinstance(data, dict)
            and data.get("version") == STATE_VERSION
            and data.get("deposit_id") == deposit_id
        ):
            self.done = dict(data.get("done", {}))
            self.partial = dict(data.get("partial", {}))
            if source == legacy:
                self._save()
        for old in (legacy, out / (STATE_FILE + ".lock")):
            with contextlib.suppress(FileNotFoundError):
                old.unlink()

    def _save(self) -> None:
        write_private(
            self.path,
            json.dumps(
                {
                    "version": STATE_VERSION,
                    "deposit_id": self.deposit_id,
                    "done": self.done,
                    "partial": self.partial,
                },
                indent=1,
                sort_keys=True,
            ).encode(),
        )

    def start(self, key: str, record: dict[str, Any]) -> None:
        with self._lock:
            self.partial[key] = record
            self._save()

    def finish(self, key: str, target: Path, sha256: str) -> None:
        st = target.stat()
        with self._lock:
            self.partial.pop(key, None)
            self.done[key] = {
                "sha256": sha256,
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "inode": st.st_ino,
            }
            self._save()

    def forget(self, key: str) -> None:
        with self._lock:
            self.partial.pop(key, None)
            self.done.pop(key, None)
            self._save()

    def verified(self, key: str, target: Path, sha256: str) -> bool:
        record = self.done.get(key)
        try:
            st = target.stat()
        except FileNotFoundError:
            return False
        return bool(record) and record == {
            "sha256": sha256,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino,
        }

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
