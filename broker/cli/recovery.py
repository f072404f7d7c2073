"""`escrow recover`: rebuild this deployment's database from its bucket and master key."""

from __future__ import annotations

import base64
import binascii

import click

from broker.cli.output import emit
from broker.errors import InvalidInput


@click.command()
@click.option(
    "--from",
    "source",
    help="the bucket to recover from (default: ESCROW_STORAGE_URL); it must be the store this "
    "deployment is configured with",
)
@click.option(
    "--manifest-key",
    help="the manifest signing key clients pinned (base64, from their pins or your records): "
    "refuse a bucket whose key differs",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def recover(source: str | None, manifest_key: str | None, as_json: bool) -> None:
    """Rebuild organisations, models, sealed deposits and the audit log from the bucket, into an
    empty database, then verify every deposit by decrypting and hashing it."""
    from broker.cli.server import server_escrow
    from broker.services.recovery import recover as run

    escrow = server_escrow()
    if source and source.rstrip("/") != escrow.settings.storage_url.rstrip("/"):
        raise InvalidInput(
            f"--from {source} is not this deployment's store ({escrow.settings.storage_url!r})",
            hint=f"set ESCROW_STORAGE_URL={source} (and ESCROW_S3_ENDPOINT_URL if needed), "
            "then run `escrow recover` again",
        )
    result = run(escrow, _key(manifest_key))
    bad = [d for d, ok in result.verified.items() if not ok]
    lines = [
        f"recovered {len(result.deposits)} deposit(s), verified by decrypting and hashing: "
        + ("all match their manifests" if not bad else f"FAILED: {', '.join(bad)}"),
        f"recovered {result.entries} audit entries; they match the newest mirrored checkpoint "
        f"(size {result.checkpoint})",
    ]
    if result.unsealed:
        lines.append(f"not recovered (never sealed): {', '.join(result.unsealed)}")
    if result.dropped_entries:
        lines.append(f"{result.dropped_entries} mirrored entries after the newest checkpoint "
                     "were left out (no signed checkpoint covers them)")
    lines += ["not in the bucket, so not recovered:"] + [f"  - {t}" for t in result.not_recovered]
    emit({"ok": not bad, **result.__dict__}, as_json, lines)
    if bad:
        raise SystemExit(1)


def _key(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise InvalidInput(
            "--manifest-key is not a base64 Ed25519 public key (32 bytes)",
            hint="copy manifest.public_key from `curl $BROKER/api/v1/keys` or a client's pins.json",
        )
    return key
