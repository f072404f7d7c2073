"""`escrow nda`: read an NDA exactly as the broker holds it, and sign it.

Commands only translate. The text is checked against the SHA-256 the broker states for it before
it is shown or signed, and the signature names that SHA-256, so what you sign is what you read.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from broker.cli.client import client_command
from broker.cli.output import emit
from broker.client.http import BrokerClient
from broker.errors import EscrowError, InvalidInput, TamperDetected, Unauthorized

SSH_NAMESPACE = "escrow-nda"

NDA_HELP = """NDA texts: read them exactly, sign them with your typed full name, and optionally an
SSH signature of the text (ssh-keygen -Y sign -n escrow-nda) by a key you registered.

\b
  escrow nda list
  escrow nda show acme-research-nda > nda.md
  escrow nda sign acme-research-nda --name "Ada Lovelace" --ssh-key ~/.ssh/id_ed25519
"""


@click.group("nda", help=NDA_HELP)
def nda() -> None:
    pass


@nda.command("list")
@client_command
def list_ndas(client: BrokerClient, as_json: bool) -> None:
    """The NDA texts, and which of them you signed (when you are logged in)."""
    texts = client.get("/api/v1/ndas", auth=False)["ndas"]
    signed: list[dict[str, Any]] | None = None
    # Without a token, list the texts only (a token the broker refuses still fails).
    with contextlib.suppress(Unauthorized):
        signed = client.get("/api/v1/me/nda-signatures")["signatures"]
    mine = {(s["nda"], s["sha256"]) for s in signed or []}
    lines = []
    for text in texts:
        for version in text["versions"]:
            version["signed"] = (
                (text["id"], version["sha256"]) in mine if signed is not None else None
            )
        latest = text["versions"][-1]
        mark = {True: "signed", False: "not signed", None: ""}[latest["signed"]]
        lines.append(
            f"{text['id']}  v{text['latest_version']}  {text['organisation']}  "
            f"{text['title']}  {mark}".rstrip()
        )
    result: dict[str, Any] = {"ndas": texts}
    if signed is not None:
        result["signatures"] = signed
    emit(result, as_json, lines or ["no NDA texts on this broker"])


@nda.command("show")
@click.argument("nda_id")
@click.option("--version", "version", default=None, help="a version (default: the latest)")
@client_command
def show(nda_id: str, version: str | None, client: BrokerClient, as_json: bool) -> None:
    """Print the exact text of an NDA (front matter included: it is part of what is signed)."""
    text = fetch_text(client, nda_id, version)
    if as_json:
        emit(text, True, [])
        return
    sys.stdout.buffer.write(text["text"].encode("utf-8"))
    sys.stdout.flush()
    click.echo(f"# {text['id']} version {text['version']}, sha256 {text['sha256']}", err=True)


@nda.command("sign")
@click.argument("nda_id")
@click.option("--name", "typed_name", required=True, help="your full name, as your signature")
@click.option("--version", "version", default=None, help="the version you read (default: latest)")
@click.option(
    "--ssh-key",
    "ssh_key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="also sign the text with this ssh-ed25519 key (ssh-keygen -Y sign); it must "
    "be a key you registered and proved",
)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@client_command
def sign(
    nda_id: str,
    typed_name: str,
    version: str | None,
    ssh_key: Path | None,
    yes: bool,
    client: BrokerClient,
    as_json: bool,
) -> None:
    """Sign an NDA with your typed full name (and optionally an SSH signature)."""
    text = fetch_text(client, nda_id, version)
    if not yes and sys.stdin.isatty():
        click.echo(
            f"{text['title']} ({text['organisation']}), version {text['version']}\n"
            f"sha256 {text['sha256']}\nread it with: escrow nda show {text['id']} "
            f"--version {text['version']}",
            err=True,
        )
        click.confirm(f"Sign it as {typed_name!r}?", abort=True, err=True)
    body: dict[str, Any] = {
        "version": text["version"],
        "sha256": text["sha256"],
        "typed_name": typed_name,
    }
    if ssh_key is not None:
        body["ssh_signature"] = ssh_sign(ssh_key, text["text"].encode("utf-8"))
    signature = client.post(f"/api/v1/ndas/{quote(nda_id, safe='')}/signatures", body)
    verb = "signed" if signature.get("created") else "had already signed"
    lines = [
        f"you {verb} {signature['nda']} version {signature['version']} "
        f"(sha256 {signature['sha256']})"
    ]
    if signature.get("ssh_key"):
        lines.append(
            f"ssh signature by key {signature['ssh_key']} "
            f"({signature.get('ssh_key_fingerprint', '')}) verified and stored"
        )
    emit(signature, as_json, lines)


def fetch_text(client: BrokerClient, nda_id: str, version: str | None) -> dict[str, Any]:
    """The text as the broker serves it, checked against the SHA-256 it states."""
    path = f"/api/v1/ndas/{quote(nda_id, safe='')}"
    if version:
        path += f"?version={quote(version, safe='')}"
    text = client.get(path, auth=False)
    actual = hashlib.sha256(text["text"].encode("utf-8")).hexdigest()
    if actual != text["sha256"]:
        raise TamperDetected(
            f"NDA {nda_id}: the text received has sha256 {actual}, but the broker states "
            f"{text['sha256']}",
            hint="something between you and the broker altered the text; do not sign it, and "
            "tell the operator",
        )
    return text


def ssh_sign(key: Path, data: bytes, namespace: str = SSH_NAMESPACE) -> str:
    """`ssh-keygen -Y sign -n escrow-nda -f KEY` over `data`: the armored signature.

    ssh-keygen asks for the key's passphrase on the terminal itself, or uses ssh-agent when KEY
    is a public key whose private half the agent holds.
    """
    program = shutil.which("ssh-keygen")
    if program is None:
        raise EscrowError(
            "ssh-keygen is not installed",
            hint="install OpenSSH (8.1 or later), or sign without --ssh-key",
        )
    # Sign a file, not stdin: ssh-keygen may read a key passphrase from stdin when it is not a
    # terminal, and must not take the text for one.
    with tempfile.TemporaryDirectory(prefix="escrow-nda-") as scratch:
        message = Path(scratch) / "nda.md"
        message.write_bytes(data)
        try:
            result = subprocess.run(
                [program, "-Y", "sign", "-n", namespace, "-f", str(key), str(message)],
                capture_output=True,
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise EscrowError(
                "ssh-keygen did not finish within 5 minutes",
                hint="run it again; it may have been waiting for a passphrase",
            ) from None
        signature = Path(str(message) + ".sig")
        if result.returncode != 0 or not signature.is_file():
            detail = result.stderr.decode(errors="replace").strip().splitlines()
            raise InvalidInput(
                f"ssh-keygen could not sign with {key}: {detail[-1] if detail else 'no output'}",
                hint="give the private key file of an ssh-ed25519 key you registered and "
                "proved (escrow keys list)",
            )
        return signature.read_text(encoding="ascii")
