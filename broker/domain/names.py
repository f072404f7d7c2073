"""Names of organisations, models and versions, and paths of files inside a deposit."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from broker.domain.principals import ORG_ROLES
from broker.errors import InvalidInput

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
_VERSION = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._+-]{0,126}[A-Za-z0-9])?$")


def check_org_name(name: str) -> str:
    if not _SLUG.match(name):
        raise InvalidInput(
            f"organisation name {name!r} is not valid",
            hint="use 1-64 lowercase letters, digits, '.', '_' or '-', e.g. acme-ai",
        )
    return name


def split_model_name(full: str) -> tuple[str, str]:
    """'org/model' -> (org, model)."""
    org, sep, model = full.partition("/")
    if not sep or not _SLUG.match(org) or not _SLUG.match(model):
        raise InvalidInput(
            f"model name {full!r} is not ORG/NAME",
            hint="name the model as its organisation and a lowercase name, e.g. acme-ai/gpt-small",
        )
    return org, model


def check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise InvalidInput(
            f"version {version!r} is not valid",
            hint="use letters, digits, '.', '_', '+' or '-', e.g. 2024-05",
        )
    return version


def check_role(role: str) -> str:
    if role not in ORG_ROLES:
        raise InvalidInput(f"role {role!r} is unknown", hint=f"use one of: {', '.join(ORG_ROLES)}")
    return role


def check_file_path(path: str) -> str:
    """A file's path relative to the model directory: forward slashes, nothing that escapes."""
    problem = _path_problem(path)
    if problem:
        raise InvalidInput(
            f"file path {path!r} {problem}",
            hint="paths are relative to the model directory, with '/' between parts",
        )
    return path


def _path_problem(path: str) -> str | None:
    if not path:
        return "is empty"
    try:
        encoded = path.encode()
    except UnicodeEncodeError:
        return "is not valid Unicode (it has a lone surrogate)"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/"):
        return "is absolute"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "contains a control character"
    if unicodedata.normalize("NFC", path) != path:
        return "is not in Unicode NFC form"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' part"
    if len(encoded) > 1024:
        return "is longer than 1024 bytes"
    return None


def check_layout(paths: Iterable[str]) -> None:
    """The one layout rule of a deposit's files (each already `check_file_path`-safe): the set
    must be writable back as files on every filesystem weights are fetched onto. Refused: a
    path twice; two paths that differ only in letter case (macOS and Windows keep one of them);
    a path that is a file and also a directory of another (`a` and `a/b`), in any letter case.
    The broker applies it when a deposit is opened, the client when it fetches."""
    seen: dict[str, str] = {}  # case-folded path -> the path as given
    for path in paths:
        folded = _folded(path)
        other = seen.get(folded)
        if other == path:
            raise InvalidInput(f"the file list names {path!r} twice", hint="list each file once")
        if other is not None:
            raise InvalidInput(
                f"files {other!r} and {path!r} differ only in letter case: on macOS and Windows, "
                "where weights are fetched too, they would be one file",
                hint="rename one of them so that the names differ in more than case",
            )
        seen[folded] = path
    for path in seen.values():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            file = seen.get(_folded("/".join(parts[:depth])))
            if file is None:
                continue
            directory = "/".join(parts[:depth])
            if file == directory:
                problem = f"{file!r} is a file and also a directory holding {path!r}: no "
                problem += "filesystem can hold both"
            else:
                problem = f"{file!r} is a file and also a directory holding {path!r} (as "
                problem += f"{directory!r}, the same name in another letter case on macOS and "
                problem += "Windows, where weights are fetched too)"
            raise InvalidInput(problem, hint="rename the file or the directory")


def _folded(path: str) -> str:
    return unicodedata.normalize("NFC", path.casefold())
