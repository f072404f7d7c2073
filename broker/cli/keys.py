"""`escrow keys`: register the keys you receive grants on, prove you hold them, list, retire.

Commands only translate: options to API calls, answers to text or `--json`.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any

import click

from broker.cli.client import client_command, client_options, open_client, reporting
from broker.cli.output import emit
from broker.client.http import BrokerClient
from broker.errors import InvalidInput

KEYS_PATH = "/api/v1/me/keys"
# The line of a decrypted challenge that carries the secret (see services.keys.challenge_text).
_SECRET_LINE = re.compile(r"^secret: ([0-9a-f]{64})$", re.MULTILINE)

KEYS_HELP = """The keys grants are issued to: age X25519 (age1…), post-quantum hybrid (age1pq1…)
or ssh-ed25519. A key counts only once you proved that you hold its private key.

\b
Make a key (post-quantum hybrid by default, what the shipped policy asks for):
  escrow keys generate                        writes ~/.config/escrow/key.txt (0600)
  escrow keys generate --x25519 -o key.txt    classical X25519, read by any age version
  escrow keys generate --ssh -o id_escrow     an OpenSSH ed25519 key (and id_escrow.pub)
\b
Registering a key needs a login made in the last 5 minutes: run `escrow login BROKER` first.
  escrow keys add --identity key.txt          register and prove in one go
  escrow keys add age1… --label laptop        register a public key, then:
  escrow keys prove KEY_ID --identity key.txt
\b
Or prove with the plain age tool (the challenge is an armored age file):
  escrow keys challenge KEY_ID > c.age
  age -d -i key.txt c.age | escrow keys prove KEY_ID --response -
"""


# --- escrow keys ------------------------------------------------------------------------------


@click.group("keys", help=KEYS_HELP)
def keys() -> None:
    pass


@keys.command("add")
@click.argument("recipient", required=False)
@click.option(
    "--identity",
    "identity_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="an age identity file or ssh-ed25519 private key: register "
    "its public key and prove it at once",
)
@click.option("--label", default="", help="a name for the key, e.g. 'laptop 2025'")
@client_options
@reporting
def add(
    recipient: str | None,
    identity_file: Path | None,
    label: str,
    broker_url: str | None,
    token: str | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    """Register RECIPIENT (age1…, age1pq1…, 'ssh-ed25519 AAAA…' or a .pub file), or the public
    key of --identity FILE."""
    identities = None
    if identity_file is not None:
        if recipient:
            raise InvalidInput(
                "give RECIPIENT or --identity, not both",
                hint="with --identity the public key is taken from the file",
            )
        identities = read_identities(identity_file)
        if len(identities) != 1:
            raise InvalidInput(
                f"{identity_file} holds {len(identities)} identities; which one to register?",
                hint="give a file with one identity, or give its public key as RECIPIENT",
            )
        recipient = identities[0].to_recipient().encode()
    elif not recipient:
        raise InvalidInput(
            "no key given", hint="usage: escrow keys add age1…|FILE.pub, or --identity FILE"
        )
    elif Path(recipient).is_file():
        recipient = Path(recipient).read_text(encoding="utf-8").strip()
    client = open_client(broker_url, token, token_file)
    key = client.post(KEYS_PATH, {"recipient": recipient, "label": label})
    if identities is not None:
        key = _prove_with(client, key, identities)
        emit(key, as_json, [f"{key['id']}: {key['type']} key {key['fingerprint']} is proven"])
        return
    emit(
        key,
        as_json,
        [
            f"{key['id']}: {key['type']} key {key['fingerprint']} is registered, not yet proven",
            f"prove it within 15 minutes: escrow keys prove {key['id']} --identity FILE",
            f"  or: escrow keys challenge {key['id']} > c.age; "
            f"age -d -i FILE c.age | escrow keys prove {key['id']} --response -",
        ],
    )


@keys.command("challenge")
@click.argument("key_id")
@click.option("--new", "renew", is_flag=True, help="ask for a new challenge even if one is open")
@client_command
def challenge(key_id: str, renew: bool, client: BrokerClient, as_json: bool) -> None:
    """Print the open challenge of a pending key (an armored age file); a new one if it expired."""
    key = _with_open_challenge(client, key_id, renew)
    if as_json:
        emit(key, True, [])
    else:
        click.echo(key["challenge"], nl=False)


@keys.command("prove")
@click.argument("key_id")
@click.option(
    "--identity",
    "identity_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="decrypt the challenge with this identity (age or ssh key)",
)
@click.option(
    "--response",
    "response",
    metavar="SECRET|-",
    help="the decrypted challenge, or - to read it from stdin (e.g. from age -d)",
)
@client_options
@reporting
def prove(
    key_id: str,
    identity_file: Path | None,
    response: str | None,
    broker_url: str | None,
    token: str | None,
    token_file: Path | None,
    as_json: bool,
) -> None:
    """Prove that you hold the private key of KEY_ID."""
    if (identity_file is None) == (response is None):
        raise InvalidInput(
            "give --identity FILE or --response SECRET|-",
            hint="--identity decrypts the challenge here; --response - reads the "
            "output of `age -d` from stdin",
        )
    client = open_client(broker_url, token, token_file)
    if identity_file is not None:
        key = _with_open_challenge(client, key_id, False)
        key = _prove_with(client, key, read_identities(identity_file))
    else:
        text = sys.stdin.read() if response == "-" else str(response)
        key = _submit(client, key_id, text)
    emit(key, as_json, [f"{key['id']}: {key['type']} key {key['fingerprint']} is {key['state']}"])


@keys.command("list")
@client_command
def list_keys(client: BrokerClient, as_json: bool) -> None:
    """Your keys: pending, proven and retired."""
    found = client.get(KEYS_PATH)["keys"]
    lines = [
        f"{k['id']}  {k['state']:<8} {k['type']:<15} {k['fingerprint']}  {k['label']}"
        for k in found
    ]
    emit({"keys": found}, as_json, lines or ["no keys registered (escrow keys add)"])


@keys.command("retire")
@click.argument("key_id")
@client_command
def retire(key_id: str, client: BrokerClient, as_json: bool) -> None:
    """Retire a key: no new grant will be issued to it."""
    key = client.delete(f"{KEYS_PATH}/{key_id}")
    emit(key, as_json, [f"{key['id']}: retired"])


@keys.command("generate")
@click.option(
    "--post-quantum",
    "kind",
    flag_value="post-quantum",
    default=True,
    help="a post-quantum hybrid key, mlkem768x25519 (AGE-SECRET-KEY-PQ-1…, age1pq1…); "
    "the default, and what a policy that requires a post-quantum key accepts",
)
@click.option(
    "--x25519",
    "kind",
    flag_value="x25519",
    help="a classical X25519 age key (AGE-SECRET-KEY-1…, age1…), as age-keygen makes",
)
@click.option(
    "--ssh", "kind", flag_value="ssh-ed25519", help="an OpenSSH ed25519 key (FILE and FILE.pub)"
)
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="where to write the private key (created 0600, never replaced) "
    "[default: ~/.config/escrow/key.txt]",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@reporting
def generate(kind: str, output: Path | None, as_json: bool) -> None:
    """Make a new private key here and print its public key (the recipient grants go to).

    The key never leaves this machine; register it with `escrow keys add --identity FILE`."""
    from broker.client import keygen

    path = output if output is not None else keygen.default_identity_path()
    new = keygen.generate(kind)
    written = keygen.write_new(path, new)
    lines = [
        new.recipient,
        f"wrote {kind} private key to {path} (mode 0600; keep it, and a backup: "
        "grants are issued to it)",
    ]
    if kind == "post-quantum":
        lines.append(
            "escrow fetch decrypts with it; of the plain age tools only age 1.3 or later reads it"
        )
    lines.append(f"next: escrow keys add --identity {path}")
    emit(
        {
            "type": kind,
            "recipient": new.recipient,
            "path": str(path),
            "files": [str(p) for p in written],
        },
        as_json,
        lines,
    )


# --- helpers ----------------------------------------------------------------------------------


def read_identities(path: Path) -> list[Any]:
    from broker import age

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(
            f"cannot read identity file {path}: {error}",
            hint="give an age identity file or an ssh-ed25519 private key",
        ) from None
    return age.parse_identities(text)


def challenge_secret(text: str) -> str | None:
    """The `secret:` value of a decrypted challenge (keys' and votes' challenges alike)."""
    match = _SECRET_LINE.search(text)
    return match.group(1) if match else None


def _with_open_challenge(client: BrokerClient, key_id: str, renew: bool) -> dict[str, Any]:
    key = client.get(f"{KEYS_PATH}/{key_id}")
    if key["state"] != "pending":
        raise InvalidInput(
            f"key {key_id} is {key['state']}, there is nothing to prove",
            hint="escrow keys list shows your keys",
        )
    if renew or not key.get("challenge"):
        key = client.post(f"{KEYS_PATH}/{key_id}/challenge")
    return key


def _prove_with(client: BrokerClient, key: dict[str, Any], identities: list[Any]) -> dict[str, Any]:
    """Decrypt the key's challenge here, with our own age code, and submit its secret."""
    from broker import age

    plaintext = io.BytesIO()
    age.decrypt(io.BytesIO(key["challenge"].encode()), plaintext, identities)
    return _submit(client, key["id"], plaintext.getvalue().decode("utf-8", errors="replace"))


def _submit(client: BrokerClient, key_id: str, text: str) -> dict[str, Any]:
    """Send the secret: the `secret:` line of a decrypted challenge, or the text as given."""
    match = _SECRET_LINE.search(text)
    secret = match.group(1) if match else text.strip()
    return client.post(f"{KEYS_PATH}/{key_id}/proof", {"response": secret})
