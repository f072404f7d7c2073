"""What a fetch is about: its options, the files of the signed manifest, the outcome, and its
errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import age
from broker.errors import (
    InvalidInput,
    TamperDetected,
)

CHUNK = age.CHUNK_SIZE
NONCE = age.NONCE_SIZE
# Chunks per ranged GET: 8 MiB of plaintext. Large enough that a request's round trip is small
# next to its bytes (S3: ~20-50 ms), small enough that jobs + 2 buffers of (cipher + plain)
# stay far under the 256 MiB budget (4 jobs: 6 x 16 MiB).
DEFAULT_BLOCK_CHUNKS = 128
DEFAULT_JOBS = 4

FETCHED, RESUMED, SKIPPED = "fetched", "resumed", "skipped"


class FileIntegrityError(TamperDetected):
    """A file's bytes do not match the signed manifest (or its payload does not authenticate)."""

    title = "integrity error"

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(
            f"integrity error in {path}: {problem}; nothing was written for it",
            hint="the payload or the broker's answer was altered in storage or on the way. "
            "Run the same command again to download the file afresh; if it fails again, tell "
            "the broker's operator (the deposit may be damaged)",
        )
        self.path = path
        self.problem = problem


class WrongIdentity(InvalidInput):
    title = "wrong identity"


@dataclass(frozen=True)
class FetchOptions:
    target: str  # ORG/NAME@VERSION
    out: Path
    identity_file: Path | None = None
    grant_id: str | None = None
    jobs: int = DEFAULT_JOBS
    age_files: bool = False
    block_chunks: int = DEFAULT_BLOCK_CHUNKS
    config_dir: Path | None = None  # where the pins are (default: the client's config dir)


@dataclass(frozen=True)
class ManifestFile:
    index: int
    path: str
    size: int
    sha256: str

    @property
    def payload_size(self) -> int:
        return age.encrypted_payload_size(self.size)


@dataclass
class FileOutcome:
    path: str
    size: int
    sha256: str
    state: str  # fetched, resumed, skipped
    output: str
    downloaded: int = 0


@dataclass
class FetchResult:
    model: str
    version: str
    grant_id: str
    deposit_id: str
    out: Path
    age_files: bool
    files: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0
    post_quantum: bool = False  # the grant's key is mlkem768x25519: age >= 1.3 reads .age files

    @property
    def bytes_downloaded(self) -> int:
        return sum(f.downloaded for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": "fetched",
            "model": self.model,
            "version": self.version,
            "grant_id": self.grant_id,
            "deposit_id": self.deposit_id,
            "out": str(self.out),
            "age_files": self.age_files,
            "post_quantum": self.post_quantum,
            "files": [f.__dict__ for f in self.files],
            "bytes_downloaded": self.bytes_downloaded,
            "seconds": round(self.seconds, 3),
        }
