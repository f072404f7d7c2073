"""NDA texts: Markdown files with a small front matter, identified by the SHA-256 of their bytes.

Pure (reads files, nothing else). A text lives in `policies/ndas/<anything>.md`:

    ---
    id: acme-research-nda
    version: 1
    title: Acme AI research access agreement
    organisation: acme-ai
    ---
    # The agreement…

The front matter is exactly those four `key: value` lines between two `---` lines, at the very
start of the file; anything else (unknown, missing or repeated keys, YAML constructs) is an
error naming the file and line, because a text that parses "roughly" could be shown one way and
signed another. A text's identity is the SHA-256 of the file's raw bytes, front matter
included, so changing a comma in the title or the body is a new text that needs new
signatures. Several versions of one NDA are several files with the same `id`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from broker.errors import ConfigError, NotFound

FRONT_MATTER_DELIMITER = "---"
FIELDS = ("id", "version", "title", "organisation")
SUFFIX = ".md"
MAX_TEXT_BYTES = 256 * 1024  # an agreement, not a book; keeps a bad file from filling memory

_ID = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?$")
_VERSION = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._+-]{0,62}[A-Za-z0-9])?$")
_ORG = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
_FIELD_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*):(?: (.*))?$")


class NdaTextError(ConfigError):
    """An NDA file in the policy directory is malformed (an operator's mistake to fix)."""

    title = "invalid NDA text"

    def __init__(self, path: Path, line: int | None, what: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(
            f"NDA text {where}: {what}",
            hint="an NDA file starts with '---', the lines 'id: …', 'version: …', 'title: …', "
            "'organisation: …', then '---' and the Markdown text",
        )
        self.path, self.line = path, line


@dataclass(frozen=True)
class NdaText:
    id: str
    version: str
    title: str
    organisation: str
    raw: bytes  # the file's exact bytes: what is shown, hashed and signed
    path: Path

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8")

    @property
    def body(self) -> str:
        """The Markdown after the front matter."""
        return _split(self.text, self.path)[1]


def parse_nda(raw: bytes, path: Path) -> NdaText:
    """One NDA text from a file's bytes; `path` only names it in errors."""
    if len(raw) > MAX_TEXT_BYTES:
        raise NdaTextError(path, None, f"is {len(raw)} bytes, more than {MAX_TEXT_BYTES}")
    if raw.startswith(b"\xef\xbb\xbf"):
        raise NdaTextError(path, 1, "starts with a byte order mark; save it as UTF-8 without BOM")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        at = raw[: error.start].count(b"\n") + 1
        raise NdaTextError(path, at, "is not valid UTF-8") from None
    if "\r" in text:
        at = text[: text.index("\r")].count("\n") + 1
        raise NdaTextError(path, at, "has a carriage return; NDA texts use LF line endings only")
    front, body = _split(text, path)
    fields: dict[str, str] = {}
    for number, line in front:
        match = _FIELD_LINE.match(line)
        if not match:
            raise NdaTextError(path, number, f"expected 'key: value', found {line[:60]!r}")
        key, value = match.group(1), (match.group(2) or "").strip()
        if key not in FIELDS:
            raise NdaTextError(
                path, number, f"unknown front matter key {key!r}; expected {', '.join(FIELDS)}"
            )
        if key in fields:
            raise NdaTextError(path, number, f"front matter key {key!r} appears twice")
        fields[key] = _unquote(value, path, number)
        if not fields[key]:
            raise NdaTextError(path, number, f"front matter key {key!r} is empty")
        _check_field(key, fields[key], path, number)
    missing = [key for key in FIELDS if key not in fields]
    if missing:
        raise NdaTextError(path, 1, f"front matter lacks {', '.join(missing)}")
    if not body.strip():
        raise NdaTextError(path, len(front) + 3, "has no text after the front matter")
    return NdaText(
        id=fields["id"],
        version=fields["version"],
        title=fields["title"],
        organisation=fields["organisation"],
        raw=raw,
        path=path,
    )


def _split(text: str, path: Path) -> tuple[list[tuple[int, str]], str]:
    """(numbered front matter lines, body)."""
    lines = text.split("\n")
    if lines[0] != FRONT_MATTER_DELIMITER:
        raise NdaTextError(path, 1, "does not start with a '---' front matter line")
    for index in range(1, len(lines)):
        if lines[index] == FRONT_MATTER_DELIMITER:
            front = [(n + 1, lines[n]) for n in range(1, index)]
            return front, "\n".join(lines[index + 1 :])
    raise NdaTextError(path, None, "the front matter has no closing '---' line")


def _unquote(value: str, path: Path, line: int) -> str:
    if value[:1] in ("'", '"'):
        if len(value) < 2 or value[-1] != value[0]:
            raise NdaTextError(path, line, f"unbalanced quotes in {value[:60]!r}")
        value = value[1:-1]
        if value[:1] in ("'", '"') or "\\" in value:
            raise NdaTextError(path, line, "quotes may only surround a plain value")
    return value


def _check_field(key: str, value: str, path: Path, line: int) -> None:
    patterns = {
        "id": (_ID, "1-128 lowercase letters, digits, '.', '_' or '-'"),
        "version": (_VERSION, "1-64 letters, digits, '.', '_', '+' or '-'"),
        "organisation": (_ORG, "an organisation name such as acme-ai"),
    }
    if key in patterns and not patterns[key][0].match(value):
        raise NdaTextError(path, line, f"{key} {value[:60]!r} is not valid: use {patterns[key][1]}")
    if key == "title" and (len(value) > 200 or any(ord(c) < 32 for c in value)):
        raise NdaTextError(path, line, "title must be one line of at most 200 characters")


# --- the directory of texts --------------------------------------------------------------------


@dataclass(frozen=True)
class NdaLibrary:
    """All NDA texts of a policy directory, checked as a whole."""

    texts: tuple[NdaText, ...]

    def ids(self) -> list[str]:
        return sorted({t.id for t in self.texts})

    def versions(self, nda_id: str) -> list[NdaText]:
        """The versions of one NDA, oldest first."""
        found = [t for t in self.texts if t.id == nda_id]
        if not found:
            raise NotFound(
                f"NDA {nda_id!r} does not exist",
                hint="list the NDAs with `escrow nda list` (GET /api/v1/ndas)",
            )
        return sorted(found, key=lambda t: version_key(t.version))

    def get(self, nda_id: str, version: str | None = None) -> NdaText:
        """One version of an NDA; the latest when `version` is None."""
        versions = self.versions(nda_id)
        if version is None:
            return versions[-1]
        for text in versions:
            if text.version == version:
                return text
        raise NotFound(
            f"NDA {nda_id!r} has no version {version!r}; it has "
            f"{', '.join(t.version for t in versions)}",
            hint=f"leave out the version to get the latest ({versions[-1].version})",
        )


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order of versions: 2 < 10, 1.2 < 1.10, 2024-05 < 2024-11."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.findall(r"\d+|[^\d]+", version)
    )


def load_library(directory: Path) -> NdaLibrary:
    """Every `*.md` file of `directory` (not recursive). A missing directory has no texts."""
    if not directory.is_dir():
        return NdaLibrary(())
    return library_of((path, path.read_bytes()) for path in sorted(directory.glob("*" + SUFFIX)))


def library_of(files: Iterable[tuple[Path, bytes]]) -> NdaLibrary:
    texts: list[NdaText] = []
    seen: dict[tuple[str, str], Path] = {}
    for path, raw in files:
        text = parse_nda(raw, path)
        other = seen.get((text.id, text.version))
        if other is not None:
            raise NdaTextError(
                path, None, f"NDA {text.id!r} version {text.version!r} is also in {other}"
            )
        seen[(text.id, text.version)] = path
        texts.append(text)
    organisations: dict[str, str] = {}
    for text in texts:
        owner = organisations.setdefault(text.id, text.organisation)
        if owner != text.organisation:
            raise NdaTextError(
                text.path,
                None,
                f"NDA {text.id!r} belongs to {owner!r} in another version, not "
                f"{text.organisation!r}",
            )
    return NdaLibrary(tuple(texts))
