"""The deposit engine: open the deposit, encrypt and upload every file resumably, finalise, and
wait for the broker's verification to seal it.

Per file: a journal entry (key, nonce, header) is written before any byte is sent; the header
is registered; parts the broker lacks are encrypted and PUT in parallel through presigned URLs
while a separate thread hashes the plaintext in order; then the upload is completed with the
SHA-256. A crash anywhere is recovered by running the same command again (see `journal.py`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from broker import age
from broker.client.deposit_files import (
    Item,
    b64,
    new_entry,
    part_source,
    stale_reason,
    upload_gone,
    upload_replaced,
)
from broker.client.deposit_parts import PartSender, Presigner, raise_first
from broker.client.deposit_seal import (
    FAILED,
    SEALED,
    VERIFYING,
    DepositFailed,
    StillVerifying,
    deposit_failure,
    wait_for_seal,
)
from broker.client.encrypt import (
    CipherSource,
    FileHasher,
    PlainSource,
    file_changed,
    sha256_file,
)
from broker.client.http import BrokerClient, BrokerError, StoreError
from broker.client.journal import DoneEntry, FileEntry, Journal
from broker.client.preencrypted import scan_pre_encrypted
from broker.client.progress import Progress
from broker.client.scan import scan_model_dir, stat_identity
from broker.domain.parts import Part, payload_size, plan_parts
from broker.domain.units import human_bytes
from broker.errors import Conflict, EscrowError, InvalidInput

__all__ = [
    "DEFAULT_JOBS",
    "FAILED",
    "SEALED",
    "VERIFYING",
    "DepositFailed",
    "DepositOptions",
    "DepositResult",
    "Depositor",
    "Item",
    "StillVerifying",
    "classical_warnings",
    "collect_items",
    "open_recipient_only",
    "open_request",
    "upload_gone",
]

# Parts in flight. bench/deposit.py on 2 cores: 1, 2 and 4 are equal within noise on the local
# store (the client is CPU-bound, ~2.3 CPU-s/GiB); S3 wants several connections and more than 4
# did not help (PERF-NOTES). Memory per job: two 4 MiB windows, whatever the part size.
DEFAULT_JOBS = 4
MAX_UPLOAD_RESTARTS = 3  # a file whose store upload keeps vanishing fails after this many
DEFAULT_WAIT_TIMEOUT_S = 6 * 3600.0


@dataclass(frozen=True)
class DepositOptions:
    model: str
    version: str
    directory: Path | None = None
    recipients: tuple[str, ...] = ()
    classical: bool = False
    jobs: int = DEFAULT_JOBS
    wait: bool = True
    pre_encrypted: bool = False
    sha256sums: Path | None = None
    config_dir: Path | None = None
    wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S
    agreement: str | None = None  # a release agreement's text, attached before the seal


@dataclass
class DepositResult:
    deposit: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    bytes_sent: int = 0
    parts_sent: int = 0
    parts_kept: int = 0
    files_restarted: list[str] = field(default_factory=list)


def collect_items(options: DepositOptions) -> list[Item]:
    if options.directory is None:
        raise InvalidInput("no model directory given", hint="pass the directory to deposit")
    if options.pre_encrypted:
        if options.sha256sums is None:
            raise InvalidInput(
                "--pre-encrypted needs --sha256sums FILE",
                hint="run `sha256sum` over the plaintext files and pass its output",
            )
        return [
            Item(p.path, p.local.source, p.plain_size,
                 (p.local.size, p.local.mtime_ns, p.local.inode), p.header, p.payload_offset,
                 p.sha256)
            for p in scan_pre_encrypted(options.directory, options.sha256sums)
        ]
    return [
        Item(f.path, f.source, f.size, (f.size, f.mtime_ns, f.inode))
        for f in scan_model_dir(options.directory)
    ]


def open_request(options: DepositOptions, items: list[Item] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": options.model,
        "version": options.version,
        "classical": options.classical,
        "extra_recipients": list(options.recipients),
    }
    if items is not None:
        body["files"] = [{"path": i.path, "size": i.plain_size} for i in items]
    return body


def classical_warnings(options: DepositOptions, extras: Iterable[age.Recipient]) -> list[str]:
    if options.classical:
        return []
    return [
        f"recipient {str(r)[:24]}… is classical ({r.stanza_type}): adding it to this "
        "post-quantum deposit makes the deposit classical (its files could be opened through "
        "that stanza by a future quantum computer); use an age1pq1… recipient to keep it "
        "post-quantum"
        for r in extras
        if not r.post_quantum
    ]


def agreement_path(model: str, version: str) -> str:
    """The API path of the release agreement of MODEL (ORG/NAME) at VERSION."""
    org, _, name = model.partition("/")
    return "/api/v1/agreements/" + "/".join(quote(p, safe="") for p in (org, name, version))


def open_recipient_only(client: BrokerClient, options: DepositOptions,
                        progress: Progress) -> dict[str, Any]:
    """Open the deposit with no files, to learn the recipient to encrypt to with plain age."""
    extras = [age.parse_recipient(r) for r in options.recipients]
    for warning in classical_warnings(options, extras):
        progress.warn(warning)
    opened: dict[str, Any] = client.post("/api/v1/deposits", open_request(options, None))
    return opened


class Depositor:
    def __init__(self, client: BrokerClient, options: DepositOptions,
                 progress: Progress | None = None) -> None:
        self.client = client
        self.options = options
        self.progress = progress or Progress(quiet=True)
        self.jobs = max(1, options.jobs)
        self.result = DepositResult({})
        self._pool: ThreadPoolExecutor | None = None
        self.journal: Journal | None = None
        self.deposit_id: str | None = None  # known once the broker opened the deposit
        self._count_lock = threading.Lock()

    # --- the whole deposit ---------------------------------------------------------------

    def run(self) -> DepositResult:
        started = time.monotonic()
        options = self.options
        if options.pre_encrypted and options.recipients:
            raise InvalidInput(
                "--recipient cannot be used with --pre-encrypted",
                hint="add your own recipient when encrypting: `age -r ESCROW -r YOURS …`",
            )
        extras = [age.parse_recipient(r) for r in options.recipients]
        for warning in classical_warnings(options, extras):
            self.progress.warn(warning)
        items = collect_items(options)
        total = sum(i.plain_size for i in items)
        self.progress.info(f"{len(items)} file(s), {human_bytes(total)} to deposit as "
                           f"{options.model}@{options.version}")
        deposit = self.client.post("/api/v1/deposits", open_request(options, items))
        deposit_id = self.deposit_id = deposit["deposit_id"]
        self.progress.info(f"deposit {deposit_id} is {deposit['state']}"
                           + (" (classical)" if deposit.get("classical") else ""))
        if options.agreement is not None:
            attached = self.client.put(
                agreement_path(options.model, options.version), {"text": options.agreement})
            self.progress.info(f"release agreement {attached['outcome']} "
                               f"(sha256 {attached['agreement']['sha256']})")
        try:
            if deposit["state"] == SEALED:
                self._check_sealed(deposit, items)
                # A run killed while it waited leaves a journal behind; it is not needed now.
                Journal.open(deposit_id, self.client.base_url, options.config_dir).delete()
                self.result.deposit = deposit
                return self.result
            self.journal = Journal.open(deposit_id, self.client.base_url, options.config_dir)
            if deposit["state"] != VERIFYING:
                recipients = [age.parse_recipient(deposit["recipient"]), *extras]
                self._upload_all(deposit, items, recipients)
                self.result.timings["upload_s"] = time.monotonic() - started
                deposit = self.client.post(f"/api/v1/deposits/{deposit_id}/finalize")
            self.result.timings["finalized_s"] = time.monotonic() - started
            if options.wait:
                deposit = wait_for_seal(self.client, self.progress, deposit_id,
                                        options.wait_timeout_s)
                self.result.timings["sealed_s"] = time.monotonic() - started
                if deposit["state"] == SEALED:
                    self.journal.delete()
                else:
                    raise deposit_failure(deposit)
            self.result.deposit = deposit
            return self.result
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            if self.journal is not None:
                self.journal.close()

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="part")
        return self._pool

    def _check_sealed(self, deposit: dict[str, Any], items: list[Item]) -> None:
        """Same paths and sizes as the sealed version: the content must match too."""
        self.progress.info("this version is already sealed; checking the local files against "
                           "its manifest")
        remote = {f["path"]: f for f in deposit["files"]}
        digests = self._hash_all(items)
        differ = [i.path for i in items if remote.get(i.path, {}).get("sha256") != digests[i.path]]
        if differ:
            raise Conflict(
                f"{deposit['model']}@{deposit['version']} is sealed with different content: "
                f"{len(differ)} file(s) differ ({', '.join(differ[:5])})",
                hint="a sealed version is immutable; deposit the new content as a new --version",
            )

    def _hash_all(self, items: list[Item]) -> dict[str, str]:
        def digest(item: Item) -> str:
            if item.sha256 is not None:
                return item.sha256
            return sha256_file(item.source, item.path, item.plain_size)

        return dict(zip((i.path for i in items), self.pool().map(digest, items), strict=True))

    # --- uploads -------------------------------------------------------------------------

    def _upload_all(self, deposit: dict[str, Any], items: list[Item],
                    recipients: list[age.Recipient]) -> None:
        assert self.journal is not None
        remote = {f["path"]: f for f in deposit["files"]}
        missing = [i.path for i in items if i.path not in remote]
        if missing:
            raise EscrowError(f"the broker's deposit lacks {len(missing)} of the files sent",
                              hint="run the same command again")
        total = sum(payload_size(i.plain_size) for i in items)
        self.progress.begin(total)
        deposit_id = deposit["deposit_id"]

        def one(item: Item) -> None:
            file = remote[item.path]
            if file["state"] in ("uploaded", "verified") and self._still_uploaded(item, file):
                self.progress.add_kept(payload_size(item.plain_size))
                return
            self._upload_file(deposit_id, item, file, recipients,
                              restart=file["state"] in ("uploaded", "verified"))

        # Several files at once, so the broker round trips of one file (start, header, URLs,
        # complete: ~0.1-0.5 s each) overlap with another file's bytes; their parts share the
        # one part pool, so no more than --jobs parts are in flight.
        width = min(self.jobs, len(items))
        with ThreadPoolExecutor(width, thread_name_prefix="file") as files:
            raise_first([files.submit(one, item) for item in items])
        self.progress.end()

    def _still_uploaded(self, item: Item, file: dict[str, Any]) -> bool:
        """Whether a file the broker already has is unchanged here (hashing only if needed)."""
        assert self.journal is not None
        done = self.journal.done.get(item.path)
        if (done is not None and done.sha256 == file["sha256"]
                and (done.size, done.mtime_ns, done.inode) == item.identity):
            return True
        digest = item.sha256 or sha256_file(item.source, item.path, item.plain_size)
        if digest == file["sha256"]:
            self.journal.finish_file(file["index"], item.path, DoneEntry(*item.identity, digest))
            return True
        self.progress.info(f"{item.path}: changed since it was uploaded; sending it again")
        return False

    def _upload_file(self, deposit_id: str, item: Item, file: dict[str, Any],
                     recipients: list[age.Recipient], restart: bool) -> None:
        """Upload one file; if the store loses its upload meanwhile (the broker or the store
        says so), start it over under a new key, a bounded number of times."""
        journal = self.journal
        assert journal is not None
        for attempt in range(MAX_UPLOAD_RESTARTS + 1):
            try:
                self._upload_file_once(deposit_id, item, file, recipients, restart)
                return
            except (BrokerError, StoreError) as error:
                gone = upload_gone(error)
                if not gone or attempt == MAX_UPLOAD_RESTARTS:
                    raise
            journal.forget_file(file["index"], item.path)  # never again under this key
            self.progress.info(f"{item.path}: {gone}; starting it over with a new key")
            with self._count_lock:
                self.result.files_restarted.append(item.path)
            restart = True

    def _upload_file_once(self, deposit_id: str, item: Item, file: dict[str, Any],
                          recipients: list[age.Recipient], restart: bool) -> None:
        journal = self.journal
        assert journal is not None
        index = file["index"]
        base = f"/api/v1/deposits/{deposit_id}/files/{index}"
        if stat_identity(item.source) != item.identity:
            raise file_changed(item.path, "changed after it was listed")
        hasher = None if item.sha256 else FileHasher(item.source, item.path,
                                                      item.plain_size).start()
        try:
            start, entry, keep = self._begin(base, index, item, recipients, restart)
            parts = plan_parts(item.plain_size, start["part_size"])
            if entry is None:
                entry = new_entry(index, item, recipients, start["part_size"])
                entry.upload = start.get("upload")
                journal.start_file(entry)  # before anything is sent: the key must survive
            elif entry.upload is None and start.get("upload"):
                journal.set_upload(index, start["upload"])
            header = None
            if not start["header_registered"]:
                # Registered while the parts go up: the broker only needs it before completion.
                header = self.pool().submit(self.client.put, base + "/header",
                                            {"header": b64(entry.header)})
            source = part_source(item, entry)
            todo = [p for p in parts if p.number not in keep]
            with self._count_lock:
                self.result.parts_kept += len(keep)
            self.progress.add_kept(sum(parts[n - 1].cipher_size for n in keep))
            sent: dict[int, dict[str, Any]] = {}
            try:
                self._send_parts(base, index, source, todo, entry, sent)
            except BaseException as error:
                refused = header.exception() if header is not None else None
                # A header refused explains the rest, unless the upload itself is gone (then
                # the header was refused because the broker reset the file).
                if refused is not None and not upload_gone(error):
                    raise refused from error
                raise
            if header is not None:
                header.result()
            digest = item.sha256 or (hasher.result() if hasher else "")
            hasher = None
            if stat_identity(item.source) != item.identity:
                raise file_changed(item.path, "changed")
            # The parts sent and their ETags: the broker needs them only where the store
            # cannot list parts (then it listed none, and this run sent every part).
            self.client.post(base + "/complete",
                             {"sha256": digest, "parts": [sent[n] for n in sorted(sent)]})
            journal.finish_file(index, item.path, DoneEntry(*item.identity, digest))
        finally:
            if hasher is not None:
                hasher.cancel()

    def _begin(self, base: str, index: int, item: Item, recipients: list[age.Recipient],
               restart: bool) -> tuple[dict[str, Any], FileEntry | None, set[int]]:
        """Start or resume a file's upload: the broker's upload state, the journal entry to
        reuse (None: make a new key), and the parts the broker has that can be kept."""
        assert self.journal is not None
        entry = None if restart else self.journal.files.get(index)
        why = stale_reason(entry, item, recipients) if entry is not None else ""
        start = self.client.post(base + "/upload", {"restart": restart or bool(why)})
        parts = plan_parts(item.plain_size, start["part_size"])
        if sum(p.cipher_size for p in parts) != start["payload_size"]:
            raise EscrowError(
                f"{item.path}: the broker expects a payload of {start['payload_size']} "
                f"bytes, this client computes {payload_size(item.plain_size)}",
                hint="update the escrow client to the broker's version",
            )
        if not (restart or why):
            stored = {p["number"]: p["size"] for p in start["parts"]}
            gone = upload_replaced(entry, start)
            if gone:
                why = gone
                if not (stored or start["header_registered"]):
                    # The broker already started the file over on a fresh, empty upload.
                    self.progress.info(f"{item.path}: {why}; starting it over with a new key")
                    self.result.files_restarted.append(item.path)
                    return start, None, set()
            elif entry is not None:
                keep, why = self._verify_kept(item, entry, parts, stored, start)
                if not why:
                    return start, entry, keep
            elif stored or start["header_registered"]:
                why = "the broker holds parts of it this run has no key for"
            else:
                return start, None, set()
            start = self.client.post(base + "/upload", {"restart": True})
        if why:
            self.progress.info(f"{item.path}: {why}; starting it over with a new key")
            self.result.files_restarted.append(item.path)
        return start, None, set()

    def _verify_kept(self, item: Item, entry: FileEntry, parts: list[Part],
                     stored: dict[int, int], start: dict[str, Any]) -> tuple[set[int], str]:
        """Fingerprint every journaled part again locally (nothing is sent) and compare.

        Returns the parts the broker has that can be kept, or a reason to start over."""
        if entry.part_size != start["part_size"]:
            return set(), "the broker's part size changed"
        unknown = sorted(set(stored) - set(entry.fingerprints))
        if unknown:
            return set(), f"the broker holds part(s) {unknown[:5]} this run has no record of"
        source = part_source(item, entry)
        numbers = sorted(entry.fingerprints)
        found = list(self.pool().map(lambda n: source.fingerprint(parts[n - 1]), numbers))
        changed = [n for n, got in zip(numbers, found, strict=True)
                   if got != entry.fingerprints[n]]
        if changed:
            return set(), f"part(s) {changed[:5]} changed since they were sent"
        return {n for n in stored if stored[n] == parts[n - 1].cipher_size}, ""

    def _send_parts(self, base: str, index: int, source: PlainSource | CipherSource,
                    todo: list[Part], entry: FileEntry, sent_parts: dict[int, dict[str, Any]],
                    ) -> None:
        """PUT each part of `todo`; `sent_parts` gets each one's number, size and ETag."""
        if not todo:
            return
        assert self.journal is not None
        urls = Presigner(self.client, base, [p.number for p in todo])
        sender = PartSender(self.client, self.progress, self.journal, index, entry, source, urls)

        def send(part: Part) -> None:
            etag = sender.send(part)
            if etag:
                sent_parts[part.number] = {"number": part.number, "size": part.cipher_size,
                                           "etag": etag}
            with self._count_lock:
                self.result.parts_sent += 1
                self.result.bytes_sent += part.cipher_size

        raise_first([self.pool().submit(send, part) for part in todo])
