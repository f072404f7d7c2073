"""Trustee shares of the local master key (`escrow admin key split` / `join`): SLIP-0039 word
shares, any threshold of which rebuild the key file; the rebuilt key is checked against the
shares' key id before it is written. Rotation of the master key is in `master_key.py`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from broker.adapters.custody.local import (
    key_id_of,
    read_key_file,
    write_key_file,
)
from broker.adapters.custody.shares import (
    ShareText,
    combine_shares,
    format_share,
    split_secret,
)
from broker.adapters.db.uow import UnitOfWork
from broker.config import Settings
from broker.domain.events import AuditAction
from broker.domain.principals import OPERATOR
from broker.errors import Conflict, CustodyError, InvalidInput

# --- trustee shares -----------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    key_id: str
    shares: list[str]  # printable share texts, in order


@dataclass(frozen=True)
class Joined:
    key_id: str
    path: Path
    written: bool  # False: the file already held this key
    moved_aside: Path | None = None


def split_master_key(
    uow: UnitOfWork, settings: Settings, shares: int, threshold: int, key_file: Path | None = None
) -> Split:
    """`shares` trustee shares of the local master key, any `threshold` of which rebuild it."""
    if settings.key_custody != "local" and key_file is None:
        raise InvalidInput(
            "the master key is held by AWS KMS and never leaves it: there is no key to split",
            hint="trustee shares are for a local key file (pass --key-file to split one)",
        )
    key = read_key_file(key_file or settings.key_file)
    words = split_secret(key, shares, threshold)
    key_id = key_id_of(key)
    uow.audit(
        AuditAction.CUSTODY_KEY_SPLIT,
        OPERATOR,
        {"key": f"local:{key_id}"},
        {"shares": shares, "threshold": threshold},
    )
    uow.commit()
    texts = [format_share(key_id, w, n, shares, threshold) for n, w in enumerate(words, 1)]
    return Split(key_id, texts)


def write_share_files(directory: Path, split: Split) -> list[Path]:
    """One file per trustee (mode 0600), never overwriting: `share-<n>-of-<N>.txt`."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    count = len(split.shares)
    paths = [directory / f"share-{n}-of-{count}.txt" for n in range(1, count + 1)]
    for path in paths:  # all or none: a half-written set would mix two splits
        if path.exists() or path.is_symlink():
            raise Conflict(
                f"share file {path} already exists; refusing to overwrite it",
                hint="write the shares of a new split into an empty directory",
            )
    for path, text in zip(paths, split.shares, strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
    return paths


def join_master_key(texts: list[ShareText], key_file: Path, *, replace: bool = False) -> Joined:
    """Rebuild the master key from trustee shares into `key_file` (mode 0600)."""
    key = combine_shares(texts)
    key_id = _check_rebuilt(key, texts)
    if key_file.exists() or key_file.is_symlink():
        existing = _existing_key_id(key_file)
        if existing == key_id:
            return Joined(key_id, key_file, written=False)
        if not replace:
            raise Conflict(
                f"key file {key_file} exists and holds "
                f"{'key ' + existing if existing else 'no readable key'}; the shares rebuild "
                f"key {key_id}",
                hint="write it elsewhere with --key-file PATH, or pass --replace to move the "
                "existing file aside (it is kept, renamed)",
            )
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = key_file.with_name(f"{key_file.name}.replaced-{stamp}")
        os.replace(key_file, aside)
        write_key_file(key_file, key)
        return Joined(key_id, key_file, written=True, moved_aside=aside)
    write_key_file(key_file, key)
    return Joined(key_id, key_file, written=True)


def _check_rebuilt(key: bytes, texts: list[ShareText]) -> str:
    if len(key) != 32:
        raise InvalidInput(
            f"the shares rebuild a {len(key)}-byte secret, not a 32-byte master key",
            hint="these are not shares made by `escrow admin key split`",
        )
    key_id = key_id_of(key)
    claimed = sorted({t.key_id for t in texts if t.key_id})
    if claimed and claimed != [key_id]:
        raise InvalidInput(
            f"the shares say they are of key {', '.join(claimed)} but rebuild key {key_id}",
            hint="a share file's key-id line was edited, or a share is damaged",
        )
    return key_id


def _existing_key_id(path: Path) -> str | None:
    try:
        return key_id_of(read_key_file(path))
    except CustodyError:
        return None
