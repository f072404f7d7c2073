"""Walk a model directory and list what can be deposited, refusing what cannot.

Deposited: regular files, and symlinks to regular files (Hugging Face cache snapshots are
directories of symlinks into `blobs/`). Refused, each with the path named: a symlinked
directory (it could pull in anything, or loop), a symlink loop, a dangling symlink, a FIFO,
socket or device, a name with a backslash or that is not UTF-8, and any path `check_file_path`
refuses. Every problem is reported at once, so the lab fixes them in one go. Paths are relative
to the model directory with '/' between parts, sorted (as the broker sorts them).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from broker.domain.names import check_file_path
from broker.errors import InvalidInput

MAX_PROBLEMS_SHOWN = 20


@dataclass(frozen=True)
class LocalFile:
    path: str  # relative, '/'-separated: the deposit path
    source: str  # absolute path to open (a symlink is followed when opened)
    size: int
    mtime_ns: int
    inode: int


def stat_identity(source: str) -> tuple[int, int, int]:
    """(size, mtime_ns, inode) of what `source` points at now."""
    st = os.stat(source)
    return st.st_size, st.st_mtime_ns, st.st_ino


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a special file"


def scan_model_dir(root: str | os.PathLike[str]) -> list[LocalFile]:
    """Every depositable file under `root`, or InvalidInput naming every path refused."""
    base = Path(root)
    if not base.is_dir():
        raise InvalidInput(
            f"model directory {str(base)!r} is not a directory",
            hint="pass the directory that holds the model's files",
        )
    base = base.resolve()
    files: list[LocalFile] = []
    problems: list[str] = []
    _walk(str(base), "", files, problems)
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        raise InvalidInput(
            f"cannot deposit {base}: {len(problems)} path(s) refused:\n  - "
            + "\n  - ".join(shown) + (f"\n  … and {more} more" if more else ""),
            hint="remove or replace these entries (symlinks to regular files are fine; "
            "symlinked directories, special files and backslashes in names are not)",
        )
    if not files:
        raise InvalidInput(
            f"model directory {base} holds no files", hint="pass the directory with the weights"
        )
    return sorted(files, key=lambda f: f.path)


def _walk(directory: str, prefix: str, files: list[LocalFile], problems: list[str]) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as error:
        problems.append(f"{prefix or '.'}: cannot list the directory ({error.strerror})")
        return
    for entry in entries:
        rel = prefix + entry.name
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(f"{rel.encode('utf-8', 'surrogateescape')!r}: name is not UTF-8")
            continue
        if "\\" in entry.name:
            problems.append(f"{rel}: name contains a backslash")
            continue
        try:
            if entry.is_symlink():
                _symlink(entry, rel, files, problems)
            elif entry.is_dir(follow_symlinks=False):
                _walk(entry.path, rel + "/", files, problems)
            else:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    _add(entry.path, rel, st, files, problems)
                else:
                    problems.append(f"{rel}: is {_kind(st.st_mode)}, not a regular file")
        except OSError as error:
            problems.append(f"{rel}: cannot be read ({error.strerror})")


def _symlink(entry: os.DirEntry[str], rel: str, files: list[LocalFile],
             problems: list[str]) -> None:
    try:
        st = os.stat(entry.path)  # follows the whole chain
    except FileNotFoundError:
        problems.append(f"{rel}: is a dangling symlink (to {os.readlink(entry.path)!r})")
        return
    except OSError as error:
        if error.errno == errno.ELOOP:
            problems.append(f"{rel}: is a symlink loop")
        else:
            problems.append(f"{rel}: symlink cannot be followed ({error.strerror})")
        return
    if stat.S_ISDIR(st.st_mode):
        problems.append(f"{rel}: is a symlink to a directory (deposit the directory itself)")
    elif stat.S_ISREG(st.st_mode):
        _add(entry.path, rel, st, files, problems)
    else:
        problems.append(f"{rel}: is a symlink to {_kind(st.st_mode)}, not a regular file")


def _add(source: str, rel: str, st: os.stat_result, files: list[LocalFile],
         problems: list[str]) -> None:
    try:
        check_file_path(rel)
    except InvalidInput as error:
        problems.append(error.message)
        return
    files.append(LocalFile(rel, source, st.st_size, st.st_mtime_ns, st.st_ino))
