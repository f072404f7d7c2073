"""The fetch engine: the grant and manifest, then every file (skipped, resumed or fetched afresh),
plain or as .age files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from broker import age
from broker.age.stream import ENCRYPTED_CHUNK_SIZE, chunk_count
from broker.client import pins as pinning
from broker.client.fetch.common import (
    CHUNK,
    FETCHED,
    NONCE,
    RESUMED,
    SKIPPED,
    FetchOptions,
    FetchResult,
    FileIntegrityError,
    FileOutcome,
    ManifestFile,
    WrongIdentity,
)
from broker.client.fetch.manifest import (
    choose_grant,
    load_identities,
    manifest_files,
    parse_target,
    post_quantum,
    verify_manifest,
)
from broker.client.fetch.output import decrypt_prefix, hash_prefix, output_path, sha256_of, umask
from broker.client.fetch.pipeline import BlockPipeline, Slots
from broker.client.fetch.ranged import RangeReader
from broker.client.fetch.release import Release
from broker.client.fetch.state import FetchState
from broker.client.http import BrokerClient
from broker.client.progress import Progress
from broker.errors import (
    Conflict,
    InvalidInput,
    TamperDetected,
)


class Fetcher:
    def __init__(
        self, client: BrokerClient, options: FetchOptions, progress: Progress | None = None
    ) -> None:
        self.client, self.options = client, options
        self.progress = progress or Progress(quiet=True, verb="fetched")
        self.jobs = max(1, options.jobs)
        self.block_chunks = max(1, options.block_chunks)
        self.reader = RangeReader(client, self.progress.add)
        self.identities: list[age.Identity] = []
        self.umask = umask()
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
            raise InvalidInput(
                "no --identity given",
                hint="pass the identity file of the key your grant was made for",
            )
        answer = self.client.get("/api/v1/grants")
        grants = answer.get("grants", []) if isinstance(answer, dict) else answer
        grant = choose_grant(list(grants or []), model, version, options.grant_id)
        grant_id = str(grant["id"])
        manifest = verify_manifest(
            self.client.get(f"/api/v1/grants/{grant_id}/manifest"), self._pinned_manifest_key()
        )
        if (manifest.get("model"), manifest.get("version")) != (model, version) or (
            grant.get("deposit_id") and manifest.get("deposit_id") != grant["deposit_id"]
        ):
            raise TamperDetected(
                f"the signed manifest is of {manifest.get('model')}@{manifest.get('version')} "
                f"(deposit {manifest.get('deposit_id')}), not of {model}@{version} (deposit "
                f"{grant.get('deposit_id')})",
                hint="tell the broker's operator",
            )
        files = manifest_files(manifest)
        out = options.out
        out.mkdir(parents=True, exist_ok=True)
        suffix = ".age" if options.age_files else ""
        targets = {f.path: output_path(out, f.path, suffix) for f in files}
        result = FetchResult(
            model,
            version,
            grant_id,
            str(manifest.get("deposit_id")),
            out,
            options.age_files,
            post_quantum=post_quantum(grant),
        )
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

    def _fetch_all(
        self,
        grant_id: str,
        files: list[ManifestFile],
        targets: dict[str, Path],
        state: FetchState,
        result: FetchResult,
    ) -> None:
        todo = []
        for mf in files:
            target = targets[mf.path]
            if self._already_there(mf, target, state):
                result.files.append(FileOutcome(mf.path, mf.size, mf.sha256, SKIPPED, str(target)))
            else:
                todo.append(mf)
        skipped = len(files) - len(todo)
        if skipped:
            self.progress.info(f"{skipped} file(s) already here and verified: skipped")
        if not todo:
            return
        self.progress.begin(sum(f.payload_size for f in todo))
        slots = Slots(self.jobs + 2, self.block_chunks)
        lock = threading.Lock()
        # The first release is checked before anything big is downloaded: a wrong identity
        # file stops here, not after gigabytes.
        first = Release(self.client, grant_id, todo[0])
        if self.identities:
            self._file_key(first)
        with (
            ThreadPoolExecutor(self.jobs, thread_name_prefix="block") as blocks,
            ThreadPoolExecutor(min(self.jobs, len(todo)), thread_name_prefix="file") as pool,
        ):
            self.pipeline = BlockPipeline(
                self.reader, slots, blocks, self.block_chunks, self.after_block
            )

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
            raise Conflict(
                f"{target} exists and is not one this fetch verified",
                hint="move it away (or choose another --out) and run again",
            )
        if target.stat().st_size == mf.size and sha256_of(target) == mf.sha256:
            state.finish(mf.path, target, mf.sha256)
            return True
        raise Conflict(
            f"{target} exists and differs from {mf.path} in the signed manifest",
            hint="move it away (or choose another --out) and run again",
        )

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
                "made for (see `escrow keys list`); nothing was downloaded",
            ) from None
        except age.AgeError as error:
            raise TamperDetected(
                f"the header released for {release.mf.path} does not open: {error.message}",
                hint="tell the broker's operator",
            ) from None

    # --- one file ----------------------------------------------------------------------

    def _fetch_file(
        self,
        grant_id: str,
        mf: ManifestFile,
        target: Path,
        state: FetchState,
        release: Release | None,
    ) -> FileOutcome:
        part = target.with_name(target.name + ".part")
        target.parent.mkdir(parents=True, exist_ok=True)
        output_path(self.options.out, mf.path)  # again, now that directories exist
        record = {
            "index": mf.index,
            "size": mf.size,
            "sha256": mf.sha256,
            "age_files": self.options.age_files,
        }
        known = state.partial.get(mf.path)
        resumable = (
            part.exists()
            and known is not None
            and all(known.get(k) == v for k, v in record.items())
        )
        try:
            return self._fetch_file_once(
                grant_id, mf, target, part, state, release, record, known if resumable else None
            )
        except FileIntegrityError as error:
            if not resumable:
                raise
            # What failed includes bytes of a .part kept on this machine from an earlier run:
            # fetch the file afresh once. If that passes, the local file was at fault (a disk,
            # or another program, changed it), not the storage or the transfer.
            self.progress.warn(
                f"{mf.path}: the {part.name} kept from an earlier run does not match the signed "
                f"manifest ({error.problem}); downloading the file afresh to find out whether "
                "the local copy or the download was damaged"
            )
        release = release or self._releases.get(mf.path)
        outcome = self._fetch_file_once(grant_id, mf, target, part, state, release, record, None)
        self.progress.warn(
            f"{mf.path}: fetched afresh and verified: the {part.name} kept on this machine had "
            "been damaged locally (check the disk, or what else writes to --out); the storage "
            "and the transfer are fine"
        )
        return outcome

    def _release(self, grant_id: str, mf: ManifestFile) -> Release:
        release = self._releases.get(mf.path)
        if release is None:
            release = self._releases[mf.path] = Release(self.client, grant_id, mf)
        return release

    def _fetch_file_once(
        self,
        grant_id: str,
        mf: ManifestFile,
        target: Path,
        part: Path,
        state: FetchState,
        release: Release | None,
        record: dict[str, Any],
        known: dict[str, Any] | None,
    ) -> FileOutcome:
        if known is None:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        try:
            if self.options.age_files:
                outcome = self._fetch_age_file(
                    grant_id, mf, target, part, state, release, known, record
                )
            else:
                outcome = self._fetch_plain(
                    grant_id, mf, target, part, state, release, known is not None, record
                )
        except (FileIntegrityError, age.AgeError) as error:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            state.forget(mf.path)
            if isinstance(error, FileIntegrityError):
                raise
            raise FileIntegrityError(mf.path, error.message) from None
        return outcome

    def _fetch_plain(
        self,
        grant_id: str,
        mf: ManifestFile,
        target: Path,
        part: Path,
        state: FetchState,
        release: Release | None,
        resumable: bool,
        record: dict[str, Any],
    ) -> FileOutcome:
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
            hash_prefix(handle, have, hasher)
            if not resumable:
                state.start(mf.path, record)
            downloaded = 0
            if start_chunk < total_chunks:
                self.progress.add_kept(NONCE + have + 16 * start_chunk if have else 0)
                if release is None:
                    release = self._release(grant_id, mf)
                key = self._file_key(release)
                downloaded = self.pipeline.transfer(
                    mf, release, key, start_chunk, handle, hasher, write_plain=True
                )
            else:
                self.progress.add_kept(mf.payload_size)
            handle.flush()
            os.fsync(handle.fileno())
        return self._checked_in_place(
            mf, hasher.hexdigest(), part, target, state, bool(have), downloaded
        )

    def _fetch_age_file(
        self,
        grant_id: str,
        mf: ManifestFile,
        target: Path,
        part: Path,
        state: FetchState,
        release: Release | None,
        known: dict[str, Any] | None,
        record: dict[str, Any],
    ) -> FileOutcome:
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
                key = self._reopen_age_part(handle, mf, header_len, start_chunk, hasher)
            downloaded = 0
            if start_chunk < total_chunks:
                if start_chunk == 0:
                    handle.seek(header_len)
                downloaded = self.pipeline.transfer(
                    mf,
                    release,
                    key,
                    start_chunk,
                    handle,
                    hasher if key else None,
                    write_plain=False,
                )
            handle.flush()
            os.fsync(handle.fileno())
        digest = hasher.hexdigest() if key is not None else None  # no identity: not checked
        return self._checked_in_place(mf, digest, part, target, state, bool(known), downloaded)

    def _checked_in_place(
        self,
        mf: ManifestFile,
        digest: str | None,
        part: Path,
        target: Path,
        state: FetchState,
        resumed: bool,
        downloaded: int,
    ) -> FileOutcome:
        """Refuse a file whose plaintext SHA-256 is not the manifest's, else put it in place."""
        if digest is not None and digest != mf.sha256:
            raise FileIntegrityError(
                mf.path, f"SHA-256 is {digest}, the signed manifest says {mf.sha256}"
            )
        return self._put_in_place(mf, part, target, state, resumed, downloaded)

    def _reopen_age_part(
        self,
        handle: BinaryIO,
        mf: ManifestFile,
        header_len: int,
        start_chunk: int,
        hasher: Any,
    ) -> bytes | None:
        """Keep the whole chunks of an .age.part and re-hash their plaintext (with an identity:
        its file key, from the kept header, is returned); the handle is left at their end."""
        total_chunks = chunk_count(mf.size)
        kept = header_len + NONCE + start_chunk * ENCRYPTED_CHUNK_SIZE
        if start_chunk == total_chunks:
            kept = header_len + mf.payload_size
        handle.truncate(kept)
        handle.seek(0)
        header = handle.read(header_len)
        key = None
        if self.identities:
            key = age.unwrap_file_key(header, self.identities)
            handle.seek(header_len)
            if start_chunk:
                decrypt_prefix(handle, key, start_chunk, total_chunks, hasher)
        handle.seek(kept)
        self.progress.add_kept(kept - header_len)
        return key

    def _put_in_place(
        self,
        mf: ManifestFile,
        part: Path,
        target: Path,
        state: FetchState,
        resumed: bool,
        downloaded: int,
    ) -> FileOutcome:
        """The verified .part becomes the file, with the mode the umask gives new files."""
        os.chmod(part, 0o666 & ~self.umask)
        os.replace(part, target)
        state.finish(mf.path, target, mf.sha256)
        return FileOutcome(
            mf.path, mf.size, mf.sha256, RESUMED if resumed else FETCHED, str(target), downloaded
        )
