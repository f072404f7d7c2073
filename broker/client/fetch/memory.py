"""A version fetched into memory: what a model worker loads (no plaintext byte on any disk).

The same steps as `Fetcher` with another sink: the grant's signed manifest checked against the
pinned key, each file's key release (on the audit log), the payload in blocks through the same
`BlockPipeline`, decrypted into a `BytesIO` and hashed on the way; a file whose SHA-256 differs
from the signed manifest is refused.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from broker import age
from broker.client import pins as pinning
from broker.client.fetch.common import FileIntegrityError
from broker.client.fetch.manifest import (
    choose_grant,
    manifest_files,
    parse_target,
    verify_manifest,
)
from broker.client.fetch.pipeline import BlockPipeline, Slots
from broker.client.fetch.ranged import RangeReader
from broker.client.fetch.release import Release
from broker.client.http import BrokerClient
from broker.errors import TamperDetected

BLOCK_CHUNKS = 16  # 1 MiB blocks


def fetch_into_memory(
    client: BrokerClient,
    target: str,
    identities: list[age.Identity],
    config_dir: Path | None,
    *,
    kinds: tuple[str, ...] = ("hosting",),
    jobs: int = 4,
    say: Callable[[str], None] | None = None,
) -> tuple[str, dict[str, bytes]]:
    """(grant id, {path: plaintext}) of `target` (ORG/NAME@VERSION), each file checked."""
    model, version = parse_target(target)
    answer = client.get("/api/v1/grants")
    grants = answer.get("grants", []) if isinstance(answer, dict) else answer
    grant = choose_grant(list(grants or []), model, version, None, kinds)
    grant_id = str(grant["id"])
    pinning.verify_broker(client, config_dir)
    pinned = pinning.load_pins(config_dir).get(pinning.broker_id(client.base_url), {})
    manifest = verify_manifest(
        client.get(f"/api/v1/grants/{grant_id}/manifest"), dict(pinned.get("manifest", {}))
    )
    if (manifest.get("model"), manifest.get("version")) != (model, version):
        raise TamperDetected(
            f"the signed manifest is of {manifest.get('model')}@{manifest.get('version')}, "
            f"not of {target}",
            hint="tell the broker's operator",
        )
    files: dict[str, bytes] = {}
    with ThreadPoolExecutor(jobs) as blocks:
        pipeline = BlockPipeline(RangeReader(client), Slots(jobs + 2, BLOCK_CHUNKS), blocks,
                                 BLOCK_CHUNKS)
        for mf in manifest_files(manifest):
            release = Release(client, grant_id, mf)  # a key release, on the audit log
            key = _file_key(release, identities)
            sink, hasher = io.BytesIO(), hashlib.sha256()
            pipeline.transfer(mf, release, key, 0, sink, hasher, write_plain=True)
            if hasher.hexdigest() != mf.sha256:
                raise FileIntegrityError(
                    mf.path, f"SHA-256 {hasher.hexdigest()} differs from the signed manifest's"
                )
            files[mf.path] = sink.getvalue()
            if say is not None:
                say(f"{mf.path}: {mf.size} bytes in memory, SHA-256 checked")
    return grant_id, files


def _file_key(release: Release, identities: list[age.Identity]) -> bytes:
    try:
        return age.unwrap_file_key(release.header, identities)
    except age.AgeError as error:
        raise TamperDetected(
            f"the header released for {release.mf.path} does not open with the worker's "
            f"identity: {error.message}",
            hint="pass the identity file whose recipient the worker was made with",
        ) from None
