"""Pin a broker's signing keys on first contact; refuse a changed key on every later contact.

Trust on first use, as ssh's known_hosts: the first `GET /api/v1/keys` from a broker is stored in
`<config dir>/pins.json` (0600). Afterwards, a manifest or checkpoint key that differs from the
pinned one stops the command with `TamperDetected`: either the operator rotated keys (then the
lab forgets the pin deliberately, after checking with the operator out of band) or someone is
impersonating the broker or rewriting what it signed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from broker.client.http import BrokerClient
from broker.client.local import config_dir, read_json, write_private
from broker.errors import EscrowError, TamperDetected

PINS_FILE = "pins.json"
# What is pinned of each key: enough to notice any change in what the key verifies.
PINNED_FIELDS = {
    "manifest": ("key_id", "public_key"),
    "checkpoint": ("key_id", "public_key", "origin", "verifier_key"),
}


def broker_id(url: str) -> str:
    """A broker's pin name: scheme://host[:port], lowercased, without path or credentials."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.lower()}://{host}{port}"


def pins_path(directory: Path | None = None) -> Path:
    return (directory or config_dir()) / PINS_FILE


def load_pins(directory: Path | None = None) -> dict[str, Any]:
    return read_json(pins_path(directory), "pinned keys file", "every broker is pinned afresh")


def _pinned_view(keys: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    view = {}
    for role, fields in PINNED_FIELDS.items():
        entry = keys.get(role)
        if not isinstance(entry, Mapping) or not entry.get("key_id") or not entry.get(
            "public_key"
        ):
            raise EscrowError(
                f"the broker's /api/v1/keys has no usable {role} key",
                hint="check that the URL points at an escrow broker",
            )
        view[role] = {f: str(entry.get(f, "")) for f in fields}
    return view


def check_keys(url: str, keys: Mapping[str, Any], directory: Path | None = None) -> str:
    """Pin `keys` for broker `url` if new; raise TamperDetected if they differ from the pin.

    Returns "pinned" (first contact) or "match".
    """
    name = broker_id(url)
    seen = _pinned_view(keys)
    pins = load_pins(directory)
    pinned = pins.get(name)
    if pinned is None:
        pins[name] = seen
        write_private(pins_path(directory),
                      (json.dumps(pins, indent=2, sort_keys=True) + "\n").encode())
        return "pinned"
    for role in PINNED_FIELDS:
        old, new = pinned.get(role, {}), seen[role]
        if old != new:
            changed = ", ".join(f for f in PINNED_FIELDS[role] if old.get(f) != new.get(f))
            raise TamperDetected(
                f"the {role} signing key of {name} changed: pinned key id "
                f"{old.get('key_id', '?')}, the broker now presents key id {new['key_id']} "
                f"({changed} differ). Refusing to continue.",
                hint="this is what an impersonated or compromised broker looks like. If the "
                "operator really rotated the keys (confirm with them out of band), forget the "
                f"old pin deliberately with `escrow pins forget {name}` and run again",
            )
    return "match"


def verify_broker(client: BrokerClient, directory: Path | None = None) -> str:
    """Fetch the broker's published keys and check them against the pin (every command does)."""
    return check_keys(client.base_url, client.get("/api/v1/keys", auth=False), directory)


def forget(url: str, directory: Path | None = None) -> bool:
    """Drop the pin of a broker; True if there was one."""
    pins = load_pins(directory)
    if pins.pop(broker_id(url), None) is None:
        return False
    write_private(pins_path(directory),
                  (json.dumps(pins, indent=2, sort_keys=True) + "\n").encode())
    return True
