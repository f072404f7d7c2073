"""What to fetch: the target named, the grant chosen, and the signed manifest checked against the
pinned key (its files, each with a safe path)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker import age
from broker.client.fetch.common import (
    ManifestFile,
)
from broker.domain.names import check_file_path, check_layout, check_version, split_model_name
from broker.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    TamperDetected,
)

# files/<n>.header, or files/<n>.r<generation>.header after a rekey (the broker's new objects)
_INDEX_RE = re.compile(r"files/(0|[1-9][0-9]{0,8})(\.r[1-9][0-9]{0,8})?\.(header|payload)")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def parse_target(text: str) -> tuple[str, str]:
    """'org/name@version' -> ('org/name', 'version'), both checked."""
    model, sep, version = text.rpartition("@")
    if not sep:
        raise InvalidInput(
            f"{text!r} names no version",
            hint="name it as ORG/NAME@VERSION, e.g. acme-ai/gpt-small@2024-05",
        )
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


def post_quantum(grant: dict[str, Any]) -> bool:
    """Whether the grant's recipient is a post-quantum one (its headers need age >= 1.3)."""
    try:
        return bool(age.parse_recipient(str(grant.get("recipient") or "")).post_quantum)
    except age.AgeError:
        return False


def choose_grant(
    grants: list[dict[str, Any]],
    model: str,
    version: str,
    grant_id: str | None,
    kinds: tuple[str, ...] = ("weights",),
) -> dict[str, Any]:
    """The grant to fetch with: --grant if given, else the active grant for model@version that
    lasts longest, of one of `kinds` (a fetch: weights; inference grants release no key, and
    a hosting grant is a model worker's, which loads into memory only). Refused with the
    reason when there is none usable."""
    wanted = f"{model}@{version}"
    grants = [g for g in grants if g.get("kind", "weights") in kinds]
    if grant_id is not None:
        grant = next((g for g in grants if g.get("id") == grant_id), None)
        if grant is None:
            raise NotFound(
                f"you have no grant {grant_id}", hint="list your grants with `escrow grants`"
            )
        if (grant.get("model"), grant.get("version")) != (model, version):
            raise InvalidInput(
                f"grant {grant_id} is for {grant.get('model')}@{grant.get('version')}, "
                f"not {wanted}",
                hint="pass the grant of this model version, or leave --grant out",
            )
        mine = [grant]
    else:
        mine = [g for g in grants if (g.get("model"), g.get("version")) == (model, version)]
    if not mine:
        raise NotFound(
            f"you have no grant for {wanted}",
            hint=f'ask for access: escrow request {wanted} --purpose "…"',
        )
    active = [g for g in mine if g.get("state") == "active"]
    if not active:
        states = ", ".join(f"{g.get('id')} is {g.get('state')}" for g in mine)
        raise Conflict(
            f"no active grant for {wanted}: {states}",
            hint="a grant not yet valid starts at its not_before; an expired or "
            "revoked one needs a new request (`escrow request`)",
        )
    return max(active, key=lambda g: str(g.get("expires_at") or ""))


def verify_manifest(signed: dict[str, Any], pinned_key: dict[str, Any]) -> dict[str, Any]:
    """The manifest, parsed, after checking its Ed25519 signature with the PINNED key over the
    exact bytes sent. TamperDetected if anything does not match."""
    text = signed.get("manifest")
    signature = signed.get("signature")
    if not isinstance(text, str) or not isinstance(signature, dict):
        raise TamperDetected(
            "the broker's manifest answer has no manifest text or signature",
            hint="check that --broker is an escrow broker",
        )
    if signature.get("algorithm") != "ed25519":
        raise TamperDetected(
            f"manifest signature algorithm is {signature.get('algorithm')!r}, expected 'ed25519'",
            hint="refusing a manifest signed otherwise",
        )
    if signature.get("key_id") != pinned_key.get("key_id"):
        raise TamperDetected(
            f"manifest is signed by key {signature.get('key_id')!r}, but the pinned manifest "
            f"key is {pinned_key.get('key_id')!r}",
            hint="the broker's key changed since it was pinned; confirm with its operator",
        )
    try:
        public = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(str(pinned_key["public_key"]), validate=True)
        )
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
            raise TamperDetected(
                f"the signed manifest names an unsafe path: {error.message}",
                hint="refusing to write outside --out; tell the operator",
            ) from None
        payload = _INDEX_RE.fullmatch(str(entry.get("payload", "")))
        header = _INDEX_RE.fullmatch(str(entry.get("header", "")))
        size, sha256 = entry.get("size"), str(entry.get("sha256", ""))
        if (
            payload is None
            or payload[3] != "payload"
            or header is None
            or header[3] != "header"
            or header.group(1, 2) != payload.group(1, 2)
        ):
            raise TamperDetected(
                f"manifest entry {path}: object keys {entry.get('header')!r}, "
                f"{entry.get('payload')!r} are not files/<n>.header/.payload",
                hint="tell the operator",
            )
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or not _SHA256_RE.fullmatch(sha256)
        ):
            raise TamperDetected(
                f"manifest entry {path}: size or sha256 is not valid", hint="tell the operator"
            )
        index = int(payload[1])
        if index in seen_index or path in seen_path:
            raise TamperDetected(
                f"manifest names file {path} (index {index}) twice", hint="tell the operator"
            )
        seen_index.add(index)
        seen_path.add(path)
        files.append(ManifestFile(index, path, size, sha256))
    try:  # the broker's own rule at open: files this client can write back on any system
        check_layout(f.path for f in files)
    except InvalidInput as error:
        raise TamperDetected(
            f"the signed manifest names files that cannot all be written: {error.message}",
            hint="tell the operator",
        ) from None
    return files
