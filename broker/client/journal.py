"""The resume journal of one deposit: what a crashed `escrow deposit` needs to continue safely.

`<config dir>/journal/<deposit id>.json`, mode 0600 (it holds file keys), replaced atomically
on every change and deleted when the deposit seals. For each unfinished file it keeps:

- the file's identity when encryption started (size, mtime_ns, inode);
- the file key and payload nonce, and the header registered for them;
- the recipients the header was made for and the part size used;
- the broker's reference to the store upload the parts went to (`upload`), so a run that finds
  the broker on a new upload (the store lost the old one) starts the file over with a new key;
- for every part ever sent, a fingerprint: a Poly1305 tag of the part's plaintext under a key
  derived from the file key (see `encrypt.py`), written (and fsynced) BEFORE the first byte of
  the part is sent: a write-ahead record. Reading a part locally and comparing fingerprints
  proves it unchanged without sending anything. Hence the invariant a resumed run relies on: a
  part with no fingerprint was never sent under this key, and a part with one is only sent again
  under this key if its plaintext is proven to be the one fingerprinted (a part in flight when
  the client was killed included).

Why the key is kept rather than re-made: a part already stored must be re-sent (or kept) with
the same key, or the payload would mix keys. Why it is thrown away whenever the plaintext may
have changed: encrypting different plaintext under the same key and chunk counter reuses
ChaCha20 nonces, so such a file starts over with a fresh file key and nonce.

For finished files it keeps their identity and SHA-256, so a resumed run skips re-hashing them.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from broker.client.local import config_dir, private_dir, remove_private, write_private
from broker.errors import EscrowError

JOURNAL_VERSION = 3
# Version 1 journaled a fingerprint only once a part's encryption had finished, so a part in
# flight at a crash had none and could be re-encrypted under the same key after an edit.
# Version 2 fingerprinted a part by its chunk tags, which this version no longer computes
# before sending, so its fingerprints cannot be compared. Unfinished files of either are not
# trusted (they start over with new keys, always safe); finished files are kept.
UNTRUSTED_FILES_VERSIONS = (1, 2)


@dataclass
class FileEntry:
    """An unfinished file's resume state."""

    index: int
    path: str
    size: int
    mtime_ns: int
    inode: int
    part_size: int
    header: bytes
    recipients: list[str]
    # None for pre-encrypted files (the lab's age made the key); never printed (repr)
    file_key: bytes | None = field(default=None, repr=False)
    nonce: bytes | None = None
    fingerprints: dict[int, str] = field(default_factory=dict)
    upload: str | None = None  # the broker's reference to the store upload the parts went to

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["header"] = base64.b64encode(self.header).decode()
        data["file_key"] = self.file_key.hex() if self.file_key is not None else None
        data["nonce"] = self.nonce.hex() if self.nonce is not None else None
        data["fingerprints"] = {str(k): v for k, v in sorted(self.fingerprints.items())}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileEntry:
        return cls(
            index=int(data["index"]),
            path=str(data["path"]),
            size=int(data["size"]),
            mtime_ns=int(data["mtime_ns"]),
            inode=int(data["inode"]),
            part_size=int(data["part_size"]),
            header=base64.b64decode(data["header"]),
            recipients=[str(r) for r in data.get("recipients", [])],
            file_key=bytes.fromhex(data["file_key"]) if data.get("file_key") else None,
            nonce=bytes.fromhex(data["nonce"]) if data.get("nonce") else None,
            fingerprints={int(k): str(v) for k, v in data.get("fingerprints", {}).items()},
            upload=str(data["upload"]) if data.get("upload") else None,
        )


@dataclass(frozen=True)
class DoneEntry:
    """A finished file: its identity when it was uploaded and the plaintext SHA-256."""

    size: int
    mtime_ns: int
    inode: int
    sha256: str


class Journal:
    """The journal of one deposit. Thread-safe: part workers record fingerprints concurrently."""

    def __init__(self, path: Path, deposit_id: str, broker: str) -> None:
        self.path = path
        self.deposit_id = deposit_id
        self.broker = broker
        self.files: dict[int, FileEntry] = {}
        self.done: dict[str, DoneEntry] = {}
        self._lock = threading.Lock()
        self._lock_file: int | None = None

    @classmethod
    def open(cls, deposit_id: str, broker: str, directory: Path | None = None) -> Journal:
        """Load the deposit's journal, or start an empty one (nothing is written until used)."""
        if not all(c.isalnum() or c in "-_" for c in deposit_id) or not deposit_id:
            raise EscrowError(f"deposit id {deposit_id!r} is not valid",
                              hint="the broker answered an unexpected deposit id")
        path = private_dir((directory or config_dir()) / "journal") / f"{deposit_id}.json"
        journal = cls(path, deposit_id, broker)
        journal._lock_file = _exclusive(path.with_suffix(".lock"), deposit_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return journal
        except ValueError:
            raise EscrowError(
                f"resume journal {path} is damaged",
                hint="remove it to start the unfinished files over (finished ones are kept by "
                "the broker), then run the same command again",
            ) from None
        version = data.get("version")
        if (version != JOURNAL_VERSION and version not in UNTRUSTED_FILES_VERSIONS) or (
                data.get("deposit_id") != deposit_id):
            raise EscrowError(f"resume journal {path} is of another version or deposit",
                              hint="remove it and run the same command again")
        if version == JOURNAL_VERSION:
            journal.files = {int(k): FileEntry.from_json(v) for k, v in data["files"].items()}
        journal.done = {k: DoneEntry(**v) for k, v in data.get("done", {}).items()}
        return journal

    def _save(self) -> None:
        data = {
            "version": JOURNAL_VERSION,
            "deposit_id": self.deposit_id,
            "broker": self.broker,
            "files": {str(k): v.to_json() for k, v in sorted(self.files.items())},
            "done": {k: asdict(v) for k, v in sorted(self.done.items())},
        }
        write_private(self.path, json.dumps(data, indent=1).encode())

    def start_file(self, entry: FileEntry) -> None:
        """Record a file's key, nonce and header before any of its bytes are sent."""
        with self._lock:
            self.files[entry.index] = entry
            self.done.pop(entry.path, None)
            self._save()

    def record_part(self, index: int, number: int, fingerprint: str) -> None:
        """Write-ahead: called, and on disk, before any byte of the part is sent."""
        with self._lock:
            entry = self.files.get(index)
            if entry is None:  # dropped by another part of the file: its key is not to be used
                raise EscrowError(
                    f"file number {index}: its key was dropped while its parts were being sent",
                    hint="run the same command again: the file starts over with a new key",
                )
            entry.fingerprints[number] = fingerprint
            self._save()

    def finish_file(self, index: int, path: str, done: DoneEntry) -> None:
        """The broker has the whole file: forget its key, remember its identity and hash."""
        with self._lock:
            self.files.pop(index, None)
            self.done[path] = done
            self._save()

    def set_upload(self, index: int, upload: str | None) -> None:
        with self._lock:
            self.files[index].upload = upload
            self._save()

    def forget_file(self, index: int, path: str) -> None:
        """Drop a file's key: its next start makes a new one (used whenever bytes may have been
        sent under the key that no longer match its fingerprints, or the upload is gone)."""
        with self._lock:
            self.files.pop(index, None)
            self.done.pop(path, None)
            self._save()

    def delete(self) -> None:
        """At seal: nothing here is needed any more, and the file keys must not linger."""
        with self._lock:
            remove_private(self.path)
            remove_private(self.path.with_suffix(".lock"))
            self.close()

    def close(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)  # releases the lock
            self._lock_file = None


def _exclusive(path: Path, deposit_id: str) -> int:
    """Hold an exclusive lock on the deposit's lock file for this process's lifetime.

    Two runs resuming one deposit at once would interleave journal writes and could encrypt a
    part twice with different content under one key; the kernel drops the lock when the
    process ends, even by kill -9, so a crashed run never blocks the next one.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EscrowError(
            f"another `escrow deposit` is already working on deposit {deposit_id}",
            hint="wait for it to finish (or stop it), then run the command again",
        ) from None
    return fd
