"""The fetch engine: a researcher downloads a granted model version, decrypts it and checks it.

    grant  -> GET  /api/v1/grants                         the caller's grants; one is chosen
    signed -> GET  /api/v1/grants/<id>/manifest           manifest text + Ed25519 signature
    header -> POST /api/v1/grants/<id>/files/<n>/release  age header for the researcher's key,
                                                          and a presigned GET of the payload

Trust: the manifest's signature is checked with the broker's manifest key as PINNED on first
contact (`pins.py`), never with a key the broker sends along; every plaintext SHA-256 is checked
against that signed manifest. Paths come from the manifest and are checked again here (no
`..`, absolute path, backslash; the resolved path stays under --out).

Transfer: each payload is cut into blocks of whole encrypted chunks (16-byte nonce, then
chunks of 64 KiB + 16); `jobs` threads fetch blocks with ranged GETs and decrypt them
(ChaCha20-Poly1305 releases the GIL), and the file's own thread writes them in order to
`<file>.part` and hashes them. Memory is a fixed pool of `jobs + 2` block buffers shared by all
files, whatever their size. A file is renamed into place only when its SHA-256 matches.

Resume: `<file>.part` always holds whole 64 KiB plaintext chunks in order. A re-run re-hashes
that prefix from disk (SHA-256 is sequential) and continues at the matching ciphertext offset,
nonce + n x (65536 + 16), with HTTP Range: nothing on disk is downloaded again. A small 0600
state file, kept in the client's config directory (`fetch/<hash of --out>.json`, never in --out,
so a finished --out holds exactly the deposit's files), says which deposit the .part files
belong to and which finished files were verified (by size, mtime and inode), so a re-run skips
them.

`--age-files` writes `NAME.age` = released header + payload for the plain `age -d` tool; with an
identity it still decrypts in memory to check the SHA-256 (plaintext is never written).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import queue
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import urllib3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from urllib3.exceptions import HTTPError as Urllib3Error

from broker import age
from broker.age.stream import ENCRYPTED_CHUNK_SIZE, chunk_count
from broker.client import pins as pinning
from broker.client.http import USER_AGENT, BrokerClient, BrokerUnreachable, StoreError, store_host
from broker.client.local import config_dir, private_dir, write_private
from broker.client.progress import Progress
from broker.domain.names import check_file_path, check_layout, check_version, split_model_name
from broker.errors import (
    Conflict,
    EscrowError,
    InvalidInput,
    NotFound,
    TamperDetected,
)

CHUNK = age.CHUNK_SIZE
NONCE = age.NONCE_SIZE
# Chunks per ranged GET: 8 MiB of plaintext. Large enough that a request's round trip is small
# next to its bytes (S3: ~20-50 ms), small enough that jobs + 2 buffers of (cipher + plain)
# stay far under the 256 MiB budget (4 jobs: 6 x 16 MiB).
DEFAULT_BLOCK_CHUNKS = 128
DEFAULT_JOBS = 4
HASH_READ = 4 * 1024 * 1024  # reading a .part back to re-hash it
STATE_FILE = ".escrow-fetch.json"
STATE_VERSION = 1
URL_MARGIN = timedelta(seconds=30)  # ask for a new URL rather than start a GET this close to expiry
STORE_RETRY = frozenset({429, 500, 502, 503, 504})
_INDEX_RE = re.compile(r"files/(0|[1-9][0-9]{0,8})\.(header|payload)")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")

FETCHED, RESUMED, SKIPPED = "fetched", "resumed", "skipped"


# --- errors -----------------------------------------------------------------------------------


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


# --- what to fetch ----------------------------------------------------------------------------


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


def parse_target(text: str) -> tuple[str, str]:
    """'org/name@version' -> ('org/name', 'version'), both checked."""
    model, sep, version = text.rpartition("@")
    if not sep:
        raise InvalidInput(f"{text!r} names no version",
                           hint="name it as ORG/NAME@VERSION, e.g. acme-ai/gpt-small@2024-05")
    split_model_name(model)
    check_version(version)
    return model, version


def load_identities(path: Path) -> list[age.Identity]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(
            f"cannot read identity file {path}: {getattr(error, 'strerror', None) or error}",
            hint="pass the age identity (AGE-SECRET-KEY-…) or OpenSSH ed25519 key you "
            "registered with `escrow keys add`",
        ) from None
    return age.parse_identities(text)


def _post_quantum(grant: dict[str, Any]) -> bool:
    """Whether the grant's recipient is a post-quantum one (its headers need age >= 1.3)."""
    try:
        return bool(age.parse_recipient(str(grant.get("recipient") or "")).post_quantum)
    except age.AgeError:
        return False


def choose_grant(grants: list[dict[str, Any]], model: str, version: str,
                 grant_id: str | None) -> dict[str, Any]:
    """The grant to fetch with: --grant if given, else the active grant for model@version that
    lasts longest. Refused with the reason when there is none usable."""
    wanted = f"{model}@{version}"
    if grant_id is not None:
        grant = next((g for g in grants if g.get("id") == grant_id), None)
        if grant is None:
            raise NotFound(f"you have no grant {grant_id}",
                           hint="list your grants with `escrow grants`")
        if (grant.get("model"), grant.get("version")) != (model, version):
            raise InvalidInput(
                f"grant {grant_id} is for {grant.get('model')}@{grant.get('version')}, "
                f"not {wanted}", hint="pass the grant of this model version, or leave --grant out")
        mine = [grant]
    else:
        mine = [g for g in grants if (g.get("model"), g.get("version")) == (model, version)]
    if not mine:
        raise NotFound(f"you have no grant for {wanted}",
                       hint=f"ask for access: escrow request {wanted} --purpose \"…\"")
    active = [g for g in mine if g.get("state") == "active"]
    if not active:
        states = ", ".join(f"{g.get('id')} is {g.get('state')}" for g in mine)
        raise Conflict(f"no active grant for {wanted}: {states}",
                       hint="a grant not yet valid starts at its not_before; an expired or "
                       "revoked one needs a new request (`escrow request`)")
    return max(active, key=lambda g: str(g.get("expires_at") or ""))


def verify_manifest(signed: dict[str, Any], pinned_key: dict[str, Any]) -> dict[str, Any]:
    """The manifest, parsed, after checking its Ed25519 signature with the PINNED key over the
    exact bytes sent. TamperDetected if anything does not match."""
    text = signed.get("manifest")
    signature = signed.get("signature")
    if not isinstance(text, str) or not isinstance(signature, dict):
        raise TamperDetected("the broker's manifest answer has no manifest text or signature",
                             hint="check that --broker is an escrow broker")
    if signature.get("algorithm") != "ed25519":
        raise TamperDetected(f"manifest signature algorithm is {signature.get('algorithm')!r}, "
                             "expected 'ed25519'", hint="refusing a manifest signed otherwise")
    if signature.get("key_id") != pinned_key.get("key_id"):
        raise TamperDetected(
            f"manifest is signed by key {signature.get('key_id')!r}, but the pinned manifest "
            f"key is {pinned_key.get('key_id')!r}",
            hint="the broker's key changed since it was pinned; confirm with its operator")
    try:
        public = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(str(pinned_key["public_key"]), validate=True))
        raw = base64.b64decode(str(signature.get("signature", "")), validate=True)
        public.verify(raw, text.encode("utf-8"))
    except (InvalidSignature, ValueError, KeyError):
        raise TamperDetected(
            "manifest signature does not verify with the pinned manifest key",
            hint="what the broker sent was altered (or signed by another key): nothing was "
            "downloaded. Tell the broker's operator",
        ) from None
    try:
        manifest = json.loads(text)
    except ValueError:
        raise TamperDetected("the signed manifest is not JSON", hint="tell the operator") from None
    if not isinstance(manifest, dict):
        raise TamperDetected("the signed manifest is not a JSON object", hint="tell the operator")
    return manifest


def manifest_files(manifest: dict[str, Any]) -> list[ManifestFile]:
    """The manifest's files, each checked: a safe path, a size, a SHA-256, and the store index
    the broker numbers it by (from `files/<n>.payload`, as `broker.services.deposits` names it)."""
    files, seen_index, seen_path = [], set(), set()
    raw = manifest.get("files")
    if not isinstance(raw, list):
        raise TamperDetected("the signed manifest lists no files", hint="tell the operator")
    for entry in raw:
        path = str(entry.get("path", ""))
        try:
            check_file_path(path)
        except InvalidInput as error:
            raise TamperDetected(f"the signed manifest names an unsafe path: {error.message}",
                                 hint="refusing to write outside --out; tell the operator",
                                 ) from None
        payload = _INDEX_RE.fullmatch(str(entry.get("payload", "")))
        header = _INDEX_RE.fullmatch(str(entry.get("header", "")))
        size, sha256 = entry.get("size"), str(entry.get("sha256", ""))
        if (payload is None or payload[2] != "payload" or header is None
                or header[2] != "header" or header[1] != payload[1]):
            raise TamperDetected(f"manifest entry {path}: object keys {entry.get('header')!r}, "
                                 f"{entry.get('payload')!r} are not files/<n>.header/.payload",
                                 hint="tell the operator")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 \
                or not _SHA256_RE.fullmatch(sha256):
            raise TamperDetected(f"manifest entry {path}: size or sha256 is not valid",
                                 hint="tell the operator")
        index = int(payload[1])
        if index in seen_index or path in seen_path:
            raise TamperDetected(f"manifest names file {path} (index {index}) twice",
                                 hint="tell the operator")
        seen_index.add(index)
        seen_path.add(path)
        files.append(ManifestFile(index, path, size, sha256))
    try:  # the broker's own rule at open: files this client can write back on any system
        check_layout(f.path for f in files)
    except InvalidInput as error:
        raise TamperDetected(f"the signed manifest names files that cannot all be written: "
                             f"{error.message}", hint="tell the operator") from None
    return files


def output_path(out: Path, path: str, suffix: str = "") -> Path:
    """Where a manifest path goes under `out`; refused unless it resolves inside `out`."""
    check_file_path(path)
    root = out.resolve()
    target = (root / (path + suffix)).resolve()
    if not target.is_relative_to(root) or target == root:
        raise TamperDetected(f"file path {path!r} resolves outside --out ({target})",
                             hint="a symbolic link under --out points elsewhere; remove it or "
                             "choose an empty --out directory")
    return target


# --- the resume state file --------------------------------------------------------------------


def state_path(out: Path, directory: Path | None = None) -> Path:
    """The state file of fetches into `out`: `<config>/fetch/<hash of out's real path>.json`."""
    name = hashlib.sha256(os.fsencode(out.resolve())).hexdigest()[:32]
    return (directory or config_dir()) / "fetch" / f"{name}.json"


class FetchState:
    """The fetch state of one --out (0600, in the config directory, see `state_path`): the
    deposit of the .part files, and the files verified.

    Locked for the life of the fetch: two fetches into one directory would write one .part twice.
    """

    def __init__(self, out: Path, deposit_id: str, age_files: bool,
                 directory: Path | None = None) -> None:
        self.path = state_path(out, directory)
        private_dir(self.path.parent)
        self.deposit_id, self.age_files = deposit_id, age_files
        self.done: dict[str, dict[str, Any]] = {}
        self.partial: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._fd = os.open(self.path.with_suffix(".lock"),
                           os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise Conflict(f"another `escrow fetch` is writing into {out}",
                           hint="wait for it to finish (or stop it), then run again") from None
        legacy = out / STATE_FILE  # where clients before issue 15 kept it
        source = self.path if self.path.exists() else legacy
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            data = {}
        if (isinstance(data, dict) and data.get("version") == STATE_VERSION
                and data.get("deposit_id") == deposit_id):
            self.done = dict(data.get("done", {}))
            self.partial = dict(data.get("partial", {}))
            if source == legacy:
                self._save()
        for old in (legacy, out / (STATE_FILE + ".lock")):
            with contextlib.suppress(FileNotFoundError):
                old.unlink()

    def _save(self) -> None:
        write_private(self.path, json.dumps({
            "version": STATE_VERSION, "deposit_id": self.deposit_id,
            "done": self.done, "partial": self.partial}, indent=1, sort_keys=True).encode())

    def start(self, key: str, record: dict[str, Any]) -> None:
        with self._lock:
            self.partial[key] = record
            self._save()

    def finish(self, key: str, target: Path, sha256: str) -> None:
        st = target.stat()
        with self._lock:
            self.partial.pop(key, None)
            self.done[key] = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                              "inode": st.st_ino}
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
        return bool(record) and record == {"sha256": sha256, "size": st.st_size,
                                           "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --- one file's release and URL ---------------------------------------------------------------


class Release:
    """The released header of one file and a fresh presigned URL for its payload."""

    def __init__(self, client: BrokerClient, grant_id: str, mf: ManifestFile) -> None:
        self.client, self.grant_id, self.mf = client, grant_id, mf
        self._lock = threading.Lock()
        self.header = b""
        self.url = ""
        self.url_headers: dict[str, str] = {}
        self.expires_at: datetime | None = None
        self.generation = 0
        self.renew()

    def renew(self, seen_generation: int | None = None) -> None:
        """Ask the broker again (a key release on the log) unless another thread just did."""
        with self._lock:
            if seen_generation is not None and seen_generation != self.generation:
                return
            answer = self.client.post(
                f"/api/v1/grants/{self.grant_id}/files/{self.mf.index}/release")
            mf = self.mf
            if answer.get("path", mf.path) != mf.path or answer.get("sha256", mf.sha256) \
                    != mf.sha256:
                raise TamperDetected(
                    f"the broker released file {mf.index} as {answer.get('path')!r} "
                    f"({answer.get('sha256')}), but the signed manifest says {mf.path!r} "
                    f"({mf.sha256})", hint="tell the broker's operator")
            try:
                self.header = base64.b64decode(str(answer["header"]), validate=True)
                self.url = str(answer["payload_url"])
            except (KeyError, ValueError):
                raise TamperDetected(f"the broker's key release for {mf.path} is malformed",
                                     hint="tell the broker's operator") from None
            headers = answer.get("payload_url_headers") or {}
            self.url_headers = {str(k): str(v) for k, v in dict(headers).items()}
            self.expires_at = _parse_time(answer.get("payload_url_expires_at"))
            self.generation += 1

    def current(self) -> tuple[str, dict[str, str], int]:
        with self._lock:
            stale = (self.expires_at is not None
                     and self.expires_at - datetime.now(UTC) < URL_MARGIN)
            generation = self.generation
        if stale:
            self.renew(generation)
        with self._lock:
            return self.url, self.url_headers, self.generation


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- ranged GETs ------------------------------------------------------------------------------


class RangeReader:
    """Ranged GETs of presigned payload URLs, retried like the client's API calls."""

    def __init__(self, client: BrokerClient, on_bytes: Any = None) -> None:
        self.client = client
        self.timeout = urllib3.Timeout(connect=10, read=120)
        self.on_bytes = on_bytes

    def read_into(self, release: Release, start: int, view: memoryview) -> int:
        """Fill `view` with payload bytes [start, start + len(view)); return the object size."""
        delays = iter(self.client.retry.delays())
        renewed = False
        while True:
            url, headers, generation = release.current()
            host = store_host(url)
            try:
                return self._attempt(url, headers, start, view)
            except _StoreTransient as transient:
                wait = next(delays, None)
                if wait is None and transient.status:  # it answered, just not well
                    raise StoreError(
                        f"the object store at {host} kept failing a download: {transient}",
                        hint="the store is failing or overloaded: run the same command again "
                        "later (nothing verified is lost); if it persists, tell the broker's "
                        "operator", status_code=transient.status) from None
                if wait is None:
                    raise BrokerUnreachable(
                        f"the object store at {host} went away: {transient}",
                        hint="nothing verified is lost: run the same command again when it is "
                        "back, and it resumes where it stopped") from None
                if self.client.on_retry:
                    self.client.on_retry(str(transient), wait)
                time.sleep(wait)
            except StoreError as error:
                if not error.url_expired or renewed:
                    raise
                renewed = True  # an expired URL: one new release, then the store's word stands
                release.renew(generation)

    def _attempt(self, url: str, headers: dict[str, str], start: int, view: memoryview) -> int:
        end = start + len(view) - 1
        host = store_host(url)
        try:
            response = self.client.pool.request(
                "GET", url, headers={**headers, "Range": f"bytes={start}-{end}",
                                     "User-Agent": USER_AGENT},
                preload_content=False, decode_content=False, redirect=False,
                timeout=self.timeout)
        except (Urllib3Error, OSError) as error:
            raise _StoreTransient(f"no answer: {type(error).__name__}") from None
        try:
            if response.status != 206:
                data = response.read(4096)
                problem = _store_problem_of(data, response.headers.get("Content-Type", ""))
                if response.status in STORE_RETRY and problem is None:
                    raise _StoreTransient(f"it answered HTTP {response.status}",
                                          response.status)
                detail, hint = problem or (data[:200].decode(errors="replace"), "")
                raise StoreError(
                    f"the object store at {host} refused a download: HTTP {response.status}"
                    + (f" ({detail})" if detail else ""),
                    hint=hint or "run the same command again; if it keeps failing, tell the "
                    "broker's operator",
                    status_code=response.status)
            total = _content_range_total(response.headers.get("Content-Range", ""))
            filled = 0
            try:
                while filled < len(view):
                    data = response.read(min(len(view) - filled, 1 << 20))
                    if not data:
                        break
                    view[filled:filled + len(data)] = data
                    filled += len(data)
                    if self.on_bytes:
                        self.on_bytes(len(data))
            except (Urllib3Error, OSError) as error:
                raise _StoreTransient(f"no answer: {type(error).__name__}") from None
            if filled != len(view):
                raise _StoreTransient(f"the answer ended after {filled} of {len(view)} bytes")
            return total
        finally:
            response.release_conn()


class _StoreTransient(Exception):
    """A failed download attempt worth retrying; `status` is the HTTP status if the store
    answered (0: nothing answered)."""

    def __init__(self, reason: str, status: int = 0) -> None:
        super().__init__(reason)
        self.status = status


def _store_problem_of(data: bytes, content_type: str) -> tuple[str, str] | None:
    """(detail, hint) of a problem+json answer (the broker's local store states a problem:
    final, not retried), or None."""
    if "json" not in content_type:
        return None
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    if not isinstance(payload, dict) or "detail" not in payload:
        return None
    return str(payload.get("detail") or ""), str(payload.get("hint") or "")


def _content_range_total(value: str) -> int:
    match = re.fullmatch(r"bytes \d+-\d+/(\d+)", value.strip())
    return int(match[1]) if match else -1


# --- the engine -------------------------------------------------------------------------------


class _Slots:
    """The fixed pool of block buffers every file shares: constant memory."""

    def __init__(self, count: int, block_chunks: int) -> None:
        self.free: queue.Queue[tuple[bytearray, bytearray]] = queue.Queue()
        for _ in range(count):
            self.free.put((bytearray(block_chunks * ENCRYPTED_CHUNK_SIZE),
                           bytearray(block_chunks * CHUNK)))

    def take(self, block: bool) -> tuple[bytearray, bytearray] | None:
        try:
            return self.free.get(block=block)
        except queue.Empty:
            return None

    def give(self, slot: tuple[bytearray, bytearray]) -> None:
        self.free.put(slot)


class Fetcher:
    def __init__(self, client: BrokerClient, options: FetchOptions,
                 progress: Progress | None = None) -> None:
        self.client, self.options = client, options
        self.progress = progress or Progress(quiet=True, verb="fetched")
        self.jobs = max(1, options.jobs)
        self.block_chunks = max(1, options.block_chunks)
        self.reader = RangeReader(client, self.progress.add)
        self.identities: list[age.Identity] = []
        self.umask = _umask()
        # Each file's key release, once made: a file fetched afresh (its .part was damaged)
        # reuses it rather than counting another release against the grant.
        self._releases: dict[str, Release] = {}
        # Test hook: called as hook(path, block_number) after each block is written to .part.
        self.after_block: Any = None

    def run(self) -> FetchResult:
        started = time.monotonic()
        options = self.options
        model, version = parse_target(options.target)
        if options.identity_file is not None:
            self.identities = load_identities(options.identity_file)
        elif not options.age_files:
            raise InvalidInput("no --identity given",
                               hint="pass the identity file of the key your grant was made for")
        answer = self.client.get("/api/v1/grants")
        grants = answer.get("grants", []) if isinstance(answer, dict) else answer
        grant = choose_grant(list(grants or []), model, version, options.grant_id)
        grant_id = str(grant["id"])
        manifest = verify_manifest(self.client.get(f"/api/v1/grants/{grant_id}/manifest"),
                                   self._pinned_manifest_key())
        if (manifest.get("model"), manifest.get("version")) != (model, version) or (
                grant.get("deposit_id") and manifest.get("deposit_id") != grant["deposit_id"]):
            raise TamperDetected(
                f"the signed manifest is of {manifest.get('model')}@{manifest.get('version')} "
                f"(deposit {manifest.get('deposit_id')}), not of {model}@{version} (deposit "
                f"{grant.get('deposit_id')})", hint="tell the broker's operator")
        files = manifest_files(manifest)
        out = options.out
        out.mkdir(parents=True, exist_ok=True)
        suffix = ".age" if options.age_files else ""
        targets = {f.path: output_path(out, f.path, suffix) for f in files}
        result = FetchResult(model, version, grant_id, str(manifest.get("deposit_id")),
                             out, options.age_files, post_quantum=_post_quantum(grant))
        state = FetchState(out, result.deposit_id, options.age_files, options.config_dir)
        try:
            self._fetch_all(grant_id, files, targets, state, result)
        finally:
            state.close()
        result.files.sort(key=lambda f: f.path)
        result.seconds = time.monotonic() - started
        return result

    def _pinned_manifest_key(self) -> dict[str, Any]:
        name = pinning.broker_id(self.client.base_url)
        pinned = pinning.load_pins(self.options.config_dir).get(name)
        if pinned is None:  # first contact outside open_client: pin now, as it would
            pinning.verify_broker(self.client, self.options.config_dir)
            pinned = pinning.load_pins(self.options.config_dir).get(name, {})
        return dict(pinned.get("manifest", {}))

    # --- all files ---------------------------------------------------------------------

    def _fetch_all(self, grant_id: str, files: list[ManifestFile], targets: dict[str, Path],
                   state: FetchState, result: FetchResult) -> None:
        todo = []
        for mf in files:
            target = targets[mf.path]
            if self._already_there(mf, target, state):
                result.files.append(FileOutcome(mf.path, mf.size, mf.sha256, SKIPPED,
                                                str(target)))
            else:
                todo.append(mf)
        skipped = len(files) - len(todo)
        if skipped:
            self.progress.info(f"{skipped} file(s) already here and verified: skipped")
        if not todo:
            return
        self.progress.begin(sum(f.payload_size for f in todo))
        self.slots = _Slots(self.jobs + 2, self.block_chunks)
        lock = threading.Lock()
        # The first release is checked before anything big is downloaded: a wrong identity
        # file stops here, not after gigabytes.
        first = Release(self.client, grant_id, todo[0])
        if self.identities:
            self._file_key(first)
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="block") as blocks, \
                ThreadPoolExecutor(min(self.jobs, len(todo)), thread_name_prefix="file") as pool:
            self.blocks = blocks

            def one(mf: ManifestFile) -> None:
                release = first if mf is todo[0] else None
                outcome = self._fetch_file(grant_id, mf, targets[mf.path], state, release)
                with lock:
                    result.files.append(outcome)

            futures = [pool.submit(one, mf) for mf in todo]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        self.progress.end()

    def _already_there(self, mf: ManifestFile, target: Path, state: FetchState) -> bool:
        if not target.exists():
            state.done.pop(mf.path, None)
            return False
        if state.verified(mf.path, target, mf.sha256):
            return True
        if self.options.age_files:
            raise Conflict(f"{target} exists and is not one this fetch verified",
                           hint="move it away (or choose another --out) and run again")
        if target.stat().st_size == mf.size and _sha256_of(target) == mf.sha256:
            state.finish(mf.path, target, mf.sha256)
            return True
        raise Conflict(f"{target} exists and differs from {mf.path} in the signed manifest",
                       hint="move it away (or choose another --out) and run again")

    def _file_key(self, release: Release) -> bytes:
        try:
            return age.unwrap_file_key(release.header, self.identities)
        except age.NoIdentityMatched as error:
            names = ", ".join(error.identity_types) or "none"
            raise WrongIdentity(
                f"this identity does not open the header released for your key: "
                f"{self.options.identity_file} holds identities of type [{names}], the header "
                f"was made for [{', '.join(error.stanza_types)}]",
                hint="pass --identity with the private key of the recipient your grant was "
                "made for (see `escrow keys list`); nothing was downloaded") from None
        except age.AgeError as error:
            raise TamperDetected(f"the header released for {release.mf.path} does not open: "
                                 f"{error.message}", hint="tell the broker's operator") from None

    # --- one file ----------------------------------------------------------------------

    def _fetch_file(self, grant_id: str, mf: ManifestFile, target: Path, state: FetchState,
                    release: Release | None) -> FileOutcome:
        part = target.with_name(target.name + ".part")
        target.parent.mkdir(parents=True, exist_ok=True)
        output_path(self.options.out, mf.path)  # again, now that directories exist
        record = {"index": mf.index, "size": mf.size, "sha256": mf.sha256,
                  "age_files": self.options.age_files}
        known = state.partial.get(mf.path)
        resumable = part.exists() and known is not None and all(
            known.get(k) == v for k, v in record.items())
        try:
            return self._fetch_file_once(grant_id, mf, target, part, state, release, record,
                                         known if resumable else None)
        except FileIntegrityError as error:
            if not resumable:
                raise
            # What failed includes bytes of a .part kept on this machine from an earlier run:
            # fetch the file afresh once. If that passes, the local file was at fault (a disk,
            # or another program, changed it), not the storage or the transfer.
            self.progress.warn(
                f"{mf.path}: the {part.name} kept from an earlier run does not match the signed "
                f"manifest ({error.problem}); downloading the file afresh to find out whether "
                "the local copy or the download was damaged")
        release = release or self._releases.get(mf.path)
        outcome = self._fetch_file_once(grant_id, mf, target, part, state, release, record, None)
        self.progress.warn(
            f"{mf.path}: fetched afresh and verified: the {part.name} kept on this machine had "
            "been damaged locally (check the disk, or what else writes to --out); the storage "
            "and the transfer are fine")
        return outcome

    def _release(self, grant_id: str, mf: ManifestFile) -> Release:
        release = self._releases.get(mf.path)
        if release is None:
            release = self._releases[mf.path] = Release(self.client, grant_id, mf)
        return release

    def _fetch_file_once(self, grant_id: str, mf: ManifestFile, target: Path, part: Path,
                         state: FetchState, release: Release | None, record: dict[str, Any],
                         known: dict[str, Any] | None) -> FileOutcome:
        if known is None:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        try:
            if self.options.age_files:
                outcome = self._fetch_age_file(grant_id, mf, target, part, state, release,
                                               known, record)
            else:
                outcome = self._fetch_plain(grant_id, mf, target, part, state, release,
                                            known is not None, record)
        except (FileIntegrityError, age.AgeError) as error:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            state.forget(mf.path)
            if isinstance(error, FileIntegrityError):
                raise
            raise FileIntegrityError(mf.path, error.message) from None
        return outcome

    def _fetch_plain(self, grant_id: str, mf: ManifestFile, target: Path, part: Path,
                     state: FetchState, release: Release | None, resumable: bool,
                     record: dict[str, Any]) -> FileOutcome:
        total_chunks = chunk_count(mf.size)
        hasher = hashlib.sha256()
        have = part.stat().st_size if resumable else 0
        if have >= mf.size:
            start_chunk = total_chunks
            have = mf.size
        else:
            start_chunk = have // CHUNK
            have = start_chunk * CHUNK
        with open(part, "r+b" if resumable else "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.truncate(have)
            _hash_prefix(handle, have, hasher)
            if not resumable:
                state.start(mf.path, record)
            downloaded = 0
            if start_chunk < total_chunks:
                self.progress.add_kept(NONCE + have + 16 * start_chunk if have else 0)
                if release is None:
                    release = self._release(grant_id, mf)
                key = self._file_key(release)
                downloaded = self._transfer(mf, release, key, start_chunk, handle, hasher,
                                            write_plain=True)
            else:
                self.progress.add_kept(mf.payload_size)
            handle.flush()
            os.fsync(handle.fileno())
        digest = hasher.hexdigest()
        if digest != mf.sha256:
            raise FileIntegrityError(mf.path, f"SHA-256 is {digest}, the signed manifest says "
                                     f"{mf.sha256}")
        os.chmod(part, 0o666 & ~self.umask)
        os.replace(part, target)
        state.finish(mf.path, target, mf.sha256)
        return FileOutcome(mf.path, mf.size, mf.sha256, RESUMED if have else FETCHED,
                           str(target), downloaded)

    def _fetch_age_file(self, grant_id: str, mf: ManifestFile, target: Path, part: Path,
                        state: FetchState, release: Release | None,
                        known: dict[str, Any] | None, record: dict[str, Any]) -> FileOutcome:
        """NAME.age = header + payload; checked against the manifest when an identity is given."""
        if release is None:
            release = self._release(grant_id, mf)
        key = self._file_key(release) if self.identities else None
        total_chunks = chunk_count(mf.size)
        hasher = hashlib.sha256()
        start_chunk, header_len, have = 0, 0, 0
        if known is not None:
            header_len = int(known.get("header_len", 0))
            have = part.stat().st_size - header_len - NONCE
            start_chunk = min(max(have, 0) // ENCRYPTED_CHUNK_SIZE, total_chunks)
            if mf.payload_size == part.stat().st_size - header_len:
                start_chunk = total_chunks
        with open(part, "r+b" if known else "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            if known is None or have < 0:
                handle.truncate(0)
                handle.write(release.header)
                header_len, start_chunk = len(release.header), 0
                state.start(mf.path, {**record, "header_len": header_len})
            else:
                kept = header_len + NONCE + start_chunk * ENCRYPTED_CHUNK_SIZE
                if start_chunk == total_chunks:
                    kept = header_len + mf.payload_size
                handle.truncate(kept)
                handle.seek(0)
                header = handle.read(header_len)
                if self.identities:
                    key = age.unwrap_file_key(header, self.identities)
                    handle.seek(header_len)
                    if start_chunk:
                        _decrypt_prefix(handle, key, start_chunk, total_chunks, hasher)
                handle.seek(kept)
                self.progress.add_kept(kept - header_len)
            downloaded = 0
            if start_chunk < total_chunks:
                if start_chunk == 0:
                    handle.seek(header_len)
                downloaded = self._transfer(mf, release, key, start_chunk, handle,
                                            hasher if key else None, write_plain=False)
            handle.flush()
            os.fsync(handle.fileno())
        if key is not None and hasher.hexdigest() != mf.sha256:
            raise FileIntegrityError(mf.path, f"SHA-256 is {hasher.hexdigest()}, the signed "
                                     f"manifest says {mf.sha256}")
        os.chmod(part, 0o666 & ~self.umask)
        os.replace(part, target)
        state.finish(mf.path, target, mf.sha256)
        return FileOutcome(mf.path, mf.size, mf.sha256, RESUMED if known else FETCHED,
                           str(target), downloaded)

    # --- the block pipeline ------------------------------------------------------------

    def _transfer(self, mf: ManifestFile, release: Release, key: bytes | None,
                  start_chunk: int, handle: BinaryIO, hasher: Any, *,
                  write_plain: bool) -> int:
        """Download chunks [start_chunk, end) of the payload, in blocks fetched in parallel,
        consumed in order: written (plaintext or, for .age files, ciphertext) and hashed."""
        nonce = bytearray(NONCE)
        total = self.reader.read_into(release, 0, memoryview(nonce))
        if total not in (-1, mf.payload_size):
            raise FileIntegrityError(mf.path, f"the stored payload is {total} bytes, a "
                                     f"{mf.size}-byte file makes {mf.payload_size}")
        if not write_plain and start_chunk == 0:
            handle.write(nonce)
        decryptor = age.PayloadDecryptor(key, bytes(nonce)) if key is not None else None
        chunks = chunk_count(mf.size)
        blocks = [(c, min(c + self.block_chunks, chunks))
                  for c in range(start_chunk, chunks, self.block_chunks)]
        downloaded = NONCE
        pending: deque[tuple[Future, tuple[bytearray, bytearray]]] = deque()
        position = 0

        def fetch(first: int, end: int, slot: tuple[bytearray, bytearray]) -> tuple[int, int]:
            cipher, plain = slot
            start = NONCE + first * ENCRYPTED_CHUNK_SIZE
            size = min(NONCE + end * ENCRYPTED_CHUNK_SIZE, mf.payload_size) - start
            view = memoryview(cipher)[:size]
            self.reader.read_into(release, start, view)
            written = 0
            if decryptor is not None:
                written = decryptor.decrypt_chunks(view, plain, first, final=end == chunks)
            return size, written

        try:
            while position < len(blocks) or pending:
                # Submit while slots are free; block for one only when nothing is in flight
                # (a file holding slots must consume before waiting, or files could deadlock).
                while position < len(blocks):
                    slot = self.slots.take(block=not pending)
                    if slot is None:
                        break
                    first, end = blocks[position]
                    pending.append((self.blocks.submit(fetch, first, end, slot), slot))
                    position += 1
                future, slot = pending.popleft()
                try:
                    size, written = future.result()
                    downloaded += size
                    if write_plain:
                        handle.write(memoryview(slot[1])[:written])
                    else:
                        handle.write(memoryview(slot[0])[:size])
                    if hasher is not None:
                        hasher.update(memoryview(slot[1])[:written])
                finally:
                    self.slots.give(slot)
                if self.after_block is not None:
                    self.after_block(mf.path, position - len(pending))
        finally:
            for future, slot in pending:
                future.cancel()
                with contextlib.suppress(BaseException):
                    future.result()
                self.slots.give(slot)
        return downloaded


def _hash_prefix(handle: BinaryIO, size: int, hasher: Any) -> None:
    handle.seek(0)
    buf = bytearray(min(HASH_READ, max(size, 1)))
    view, left = memoryview(buf), size
    while left:
        n = handle.readinto(view[:min(left, len(buf))])
        if not n:
            raise EscrowError("a .part file shrank while it was being read",
                              hint="run the same command again")
        hasher.update(view[:n])
        left -= n
    handle.seek(size)


def _decrypt_prefix(handle: BinaryIO, key: bytes, chunks: int, total_chunks: int,
                    hasher: Any) -> None:
    """Re-hash the plaintext of the first `chunks` chunks of an .age.part (at its nonce)."""
    nonce = handle.read(NONCE)
    decryptor = age.PayloadDecryptor(key, nonce)
    batch = 64
    cipher, plain = bytearray(batch * ENCRYPTED_CHUNK_SIZE), bytearray(batch * CHUNK)
    done = 0
    while done < chunks:
        n = min(batch, chunks - done)
        final = done + n == total_chunks
        size = n * ENCRYPTED_CHUNK_SIZE
        got = handle.readinto(memoryview(cipher)[:size])
        view = memoryview(cipher)[:got]
        written = decryptor.decrypt_chunks(view, plain, done, final=final)
        hasher.update(memoryview(plain)[:written])
        done += n


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        _hash_prefix(handle, path.stat().st_size, hasher)
    return hasher.hexdigest()


def _umask() -> int:
    """The process umask (read once, before any thread runs: os.umask sets it to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
