"""An auditor's checks of a broker's audit log over the API, trusting only the pinned key."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.auditlog.checkpoint import Checkpoint
from broker.auditlog.proofs import ProofError, leaf_hash, verify_inclusion
from broker.auditlog.verifier import LogReplay, LogTampered, verify_extension
from broker.client.checkpoints import pinned_verifier_key, verify_note
from broker.client.http import BrokerClient
from broker.errors import TamperDetected

PAGE = 1000
_HINT = "do not trust this broker's log; keep what you fetched and tell the escrow's operators"


@dataclass(frozen=True)
class Verified:
    checkpoint: Checkpoint
    since: Checkpoint | None


def newest_checkpoint(
    client: BrokerClient, size: int | None = None, directory: Path | None = None
) -> Checkpoint:
    if size is None and client.checkpoint is not None:  # verified on contact already
        return client.checkpoint
    path = "/api/v1/audit/checkpoint" + (f"?size={size}" if size is not None else "")
    key = pinned_verifier_key(client.base_url, directory)
    return verify_note(client.get(path, auth=False)["note"], key)


def verify_log(
    client: BrokerClient, since_note: str | None = None, directory: Path | None = None
) -> Verified:
    """Fetch every entry up to the newest checkpoint, recompute its root, check the signature;
    with `since_note`, prove the log extends that older checkpoint too."""
    key = pinned_verifier_key(client.base_url, directory)
    newest = newest_checkpoint(client, directory=directory)
    since = verify_note(since_note, key) if since_note is not None else None
    roots = {newest.size: newest.root}
    if since is not None:
        check_extends(client, since, newest)
        roots[since.size] = since.root
    replay = LogReplay(roots=roots)
    try:
        for start in range(0, newest.size, PAGE):
            end = min(start + PAGE, newest.size)
            page = client.get(f"/api/v1/audit/entries?start={start}&end={end}")["entries"]
            for entry in page:
                replay.add(
                    int(entry["seq"]),
                    base64.b64decode(entry["leaf"]),
                    bytes.fromhex(entry["leaf_hash"]),
                )
        replay.finish(newest.size)
    except LogTampered as error:
        raise TamperDetected(f"audit log of {client.base_url}: {error}", hint=_HINT) from None
    return Verified(checkpoint=newest, since=since)


def check_extends(client: BrokerClient, old: Checkpoint, new: Checkpoint) -> None:
    if old.size > new.size:
        raise TamperDetected(
            f"the broker's log has {new.size} entries, fewer than the {old.size} of the "
            "checkpoint you saved: entries were removed",
            hint=_HINT,
        )
    answer = client.get(f"/api/v1/audit/consistency?first={old.size}&second={new.size}",
                        auth=False)
    try:
        verify_extension(old.size, new.size, old.root, new.root, _hashes(answer["proof"]))
    except ProofError as error:
        raise TamperDetected(
            f"the broker's log of size {new.size} does not extend your checkpoint of size "
            f"{old.size}: {error}",
            hint=_HINT,
        ) from None


def prove(client: BrokerClient, seq: int) -> dict[str, Any]:
    """An inclusion proof of entry `seq`, checked here, as a bundle anyone can check offline."""
    answer = client.get(f"/api/v1/audit/inclusion?seq={seq}", auth=False)
    bundle: dict[str, Any] = {
        "seq": answer["seq"],
        "size": answer["size"],
        "leaf_hash": answer["leaf_hash"],
        "proof": answer["proof"],
        "checkpoint": answer["checkpoint"],
        "verifier_key": pinned_verifier_key(client.base_url),
    }
    if client.has_token:
        bundle["leaf"] = client.get(f"/api/v1/audit/events/{seq}")["leaf"]
    check_bundle(bundle)
    return bundle


def check_bundle(bundle: dict[str, Any], verifier_key: str | None = None) -> Checkpoint:
    """Offline: the bundle's checkpoint is signed by the key, and the entry is in it."""
    checkpoint = verify_note(bundle["checkpoint"], verifier_key or bundle["verifier_key"])
    digest = bytes.fromhex(bundle["leaf_hash"])
    if "leaf" in bundle and leaf_hash(base64.b64decode(bundle["leaf"])) != digest:
        raise TamperDetected(
            f"entry {bundle['seq']}: its bytes do not hash to the proven leaf hash", hint=_HINT
        )
    if int(bundle["size"]) != checkpoint.size:
        raise TamperDetected(
            f"the proof is for a log of size {bundle['size']}, its checkpoint has "
            f"{checkpoint.size}",
            hint=_HINT,
        )
    try:
        verify_inclusion(
            int(bundle["seq"]), checkpoint.size, digest, _hashes(bundle["proof"]),
            checkpoint.root,
        )
    except ProofError as error:
        raise TamperDetected(
            f"entry {bundle['seq']} is not in the signed log of size {checkpoint.size}: {error}",
            hint=_HINT,
        ) from None
    return checkpoint


def _hashes(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


def dumps(bundle: dict[str, Any]) -> str:
    return json.dumps(bundle, indent=2, sort_keys=True)
