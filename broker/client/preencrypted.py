"""Register files encrypted by the lab with the plain `age` tool.

Step 1: `escrow deposit --model M --version V --classical --recipient-only` opens the deposit
with no files and prints its recipient (classical `age1…`: Debian's age 1.1 has no
post-quantum type). Step 2: the lab runs `age -r RECIPIENT -o out/NAME.age NAME` for each file,
`sha256sum` over the plaintext files, and `escrow deposit out/ --pre-encrypted --sha256sums
SUMS …`. Each `NAME.age` is split into its header (up to and including the `---` MAC line) and
its payload; the payload's byte ranges are uploaded as the same parts a plaintext deposit would
send, and the plaintext size follows from the payload size. The broker refuses a header its
escrow identity cannot open, and the verification worker checks the SHA-256s given here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from broker import age
from broker.client.scan import LocalFile, scan_model_dir
from broker.domain.names import check_file_path
from broker.errors import InvalidInput

SUFFIX = ".age"
_SUM_LINE = re.compile(r"^\\?([0-9a-fA-F]{64}) [ *](.+)$")


@dataclass(frozen=True)
class PreEncrypted:
    local: LocalFile  # the .age file on disk
    path: str  # the deposit path (NAME of NAME.age)
    header: bytes
    payload_offset: int
    plain_size: int
    sha256: str


def read_sha256sums(path: Path) -> dict[str, str]:
    """`sha256sum` output: '<hex>  <name>' (or ' *<name>' for binary mode) per line."""
    sums: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise InvalidInput(
            f"cannot read --sha256sums file {path}: {error.strerror}",
            hint="pass the output of `sha256sum` run in the model directory",
        ) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        match = _SUM_LINE.match(line)
        if not match:
            raise InvalidInput(
                f"{path}, line {number}: not in sha256sum format",
                hint="each line is '<64 hex digits>  <path>', as `sha256sum` prints it",
            )
        name = match.group(2)
        while name.startswith("./"):
            name = name[2:]
        sums[name] = match.group(1).lower()
    return sums


def scan_pre_encrypted(directory: Path, sums_file: Path) -> list[PreEncrypted]:
    sums = read_sha256sums(sums_file)
    problems: list[str] = []
    items: list[PreEncrypted] = []
    for local in scan_model_dir(directory):
        if not local.path.endswith(SUFFIX) or local.path == SUFFIX:
            problems.append(f"{local.path}: does not end in {SUFFIX}")
            continue
        path = local.path[: -len(SUFFIX)]
        try:
            check_file_path(path)
        except InvalidInput as error:
            problems.append(error.message)
            continue
        digest = sums.get(path)
        if digest is None:
            problems.append(f"{path}: has no line in {sums_file}")
            continue
        try:
            with open(local.source, "rb") as handle:
                header = age.read_header(handle).encode()
        except age.AgeError as error:
            problems.append(f"{local.path}: not a binary age file ({error.message}; "
                            "armored files made with -a are not accepted)")
            continue
        payload = local.size - len(header)
        try:
            plain = age.plaintext_size(payload)
        except age.AgeError:
            problems.append(f"{local.path}: its payload of {payload} bytes is truncated "
                            "or has extra bytes")
            continue
        items.append(PreEncrypted(local, path, header, len(header), plain, digest))
    if problems:
        raise InvalidInput(
            f"cannot register {directory} as pre-encrypted files:\n  - " + "\n  - ".join(problems),
            hint="give one NAME.age per file, made by `age -r RECIPIENT -o NAME.age NAME`, and "
            "the `sha256sum` of every plaintext NAME in --sha256sums",
        )
    return sorted(items, key=lambda i: i.path)
