"""New identities a researcher keeps on their own machine: `escrow keys generate`.

The file is what the `age` tools write (`age-keygen`, and `age-keygen -pq` from age 1.3): a
`# created:` line, a `# public key:` line and the secret. An ssh-ed25519 key is an unencrypted
OpenSSH private key file, as `ssh-keygen -t ed25519 -N ''` writes it; its `.pub` sits next to it.
The file is created 0600 and never replaces an existing one: a lost identity is lost grants.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from broker.client.local import config_dir, private_dir
from broker.errors import Conflict, InvalidInput

KINDS = ("post-quantum", "x25519", "ssh-ed25519")


@dataclass(frozen=True)
class NewKey:
    kind: str  # one of KINDS
    recipient: str  # what `escrow keys add` registers
    secret: str  # the file's whole text; never printed or logged


def default_identity_path() -> Path:
    """`~/.config/escrow/key.txt` (or under $ESCROW_CONFIG_DIR / $XDG_CONFIG_HOME)."""
    return config_dir() / "key.txt"


def generate(kind: str, *, comment: str = "") -> NewKey:
    from broker import age

    if kind == "ssh-ed25519":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        secret = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
        public = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        return NewKey(kind, f"{public} {comment}".strip(), secret)
    if kind == "post-quantum":
        identity: age.Identity = age.generate_hybrid_identity()
    elif kind == "x25519":
        identity = age.generate_x25519_identity()
    else:
        raise InvalidInput(f"unknown key kind {kind!r}", hint=f"one of: {', '.join(KINDS)}")
    recipient = identity.to_recipient().encode()
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    created = created.replace("+00:00", "Z")
    secret = f"# created: {created}\n# public key: {recipient}\n{identity.encode()}\n"
    return NewKey(kind, recipient, secret)


def write_new(path: Path, key: NewKey) -> list[Path]:
    """Create `path` (0600, its folder 0700 when we make it) holding the secret; refuse to replace
    an existing file. For ssh-ed25519 also `path.pub`. Returns the files written."""
    written = [path]
    targets = [(path, key.secret, 0o600)]
    if key.kind == "ssh-ed25519":
        public = path.with_name(path.name + ".pub")
        targets.append((public, key.recipient + "\n", 0o644))
        written.append(public)
    for target, _, _ in targets:
        if target.exists() or target.is_symlink():
            raise Conflict(
                f"{target} exists already; it is not replaced (an identity you overwrite "
                f"takes its grants with it)",
                hint="give another file with -o FILE, or move the old one away first",
            )
    if not path.parent.exists():
        private_dir(path.parent)
    created: list[Path] = []
    try:
        for target, text, mode in targets:
            _create_exclusive(target, text.encode(), mode)
            created.append(target)
    except BaseException:
        for target in created:
            with contextlib.suppress(OSError):
                target.unlink()
        raise
    return written


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise Conflict(
            f"{path} exists already; it is not replaced",
            hint="give another file with -o FILE, or move the old one away first",
        ) from None
    except OSError as error:
        raise InvalidInput(
            f"cannot create {path}: {error.strerror}",
            hint="give a file in a folder you can write to, with -o FILE",
        ) from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # the umask must not widen or narrow it
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
