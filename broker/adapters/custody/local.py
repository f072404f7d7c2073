"""Local key custody: a 32-byte master key in a file (mode 0600) wraps secrets with AES-256-GCM.

The key file is small text, recognisable by its first line:

    weights-escrow master key v1
    key-id: 0123456789abcdef
    key: <base64 of 32 bytes>

key id = first 8 bytes (hex) of SHA-256 of the key. It names the key in every blob, so a broker
can say which key a blob needs and a rotation can find blobs wrapped by an old key.

The key file is a keyring: new blobs are wrapped with the key in the file (re-read when a
rotation replaces it), and a blob naming another key id is opened with the retired key kept next
to it as `<key file>.<key id>` (e.g. `master.key.0123456789abcdef`). So a running broker reads
old-key and new-key blobs while `escrow admin key rotate` re-wraps them, without a restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.adapters.custody.blob import (
    BlobInfo,
    check_context,
    check_secret,
    decode_blob,
    encode_blob,
    field_bytes,
    require_backend,
)
from broker.auditlog.leaf import canonical_json
from broker.durable import fsync_directory
from broker.errors import CustodyError

BACKEND = "local"
KEY_FILE_HEADER = "weights-escrow master key v1"
KEY_SIZE = 32  # AES-256
# Why random 96-bit nonces: a master key wraps few blobs (one per deposit and signing key), far
# below the 2^32 messages after which random GCM nonces risk a collision (NIST SP 800-38D).
NONCE_SIZE = 12
TAG_SIZE = 16
_MAX_KEY_FILE_BYTES = 4096
_KEY_ID = re.compile(r"[0-9a-f]{16}")


def key_id_of(key: bytes) -> str:
    return hashlib.sha256(key).digest()[:8].hex()


def generate_key() -> bytes:
    return AESGCM.generate_key(bit_length=8 * KEY_SIZE)


def is_key_id(text: str) -> bool:
    return bool(_KEY_ID.fullmatch(text))


def retired_key_path(key_file: Path, key_id: str) -> Path:
    """Where the retired key `key_id` is kept: beside the key file, named by its id."""
    if not is_key_id(key_id):
        # The id comes from a blob: never let it name a path outside the key directory.
        raise CustodyError(
            f"{key_id[:40]!r} is not a local key id (16 hex digits)",
            hint="the blob was altered, or was not written by local custody",
        )
    return key_file.with_name(f"{key_file.name}.{key_id}")


def read_key_file(path: Path) -> bytes:
    """The 32-byte key in a master key file, after checking its mode, format and key id."""
    return _read_key(Path(path))[0]


def write_key_file(path: Path, key: bytes) -> None:
    """Write `key` as a new master key file (mode 0600, fsynced); refuse to overwrite one."""
    path = Path(path)
    text = f"{KEY_FILE_HEADER}\nkey-id: {key_id_of(key)}\nkey: {base64.b64encode(key).decode()}\n"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise CustodyError(
            f"master key file {path} already exists; refusing to overwrite it",
            hint="a new key would orphan every blob wrapped by the old one; move the old "
            "file away first only if you mean to replace it",
        ) from None
    except OSError as e:
        raise CustodyError(f"cannot create master key file {path}: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    fsync_directory(path.parent)


def replace_key_file(path: Path, key: bytes) -> None:
    """Atomically make `path` hold `key`: readers see the old key file or the new, never half.

    The caller keeps the old key first (`retired_key_path`): this overwrites it."""
    path = Path(path)
    staging = path.with_name(path.name + ".new")
    staging.unlink(missing_ok=True)  # left by a rotation killed before its switch: unused
    write_key_file(staging, key)
    os.replace(staging, path)
    fsync_directory(path.parent)


class LocalCustody:
    """KeyCustody with a master key file on this machine (and the retired keys beside it)."""

    name = BACKEND

    def __init__(self, key_file: Path) -> None:
        self.key_file = Path(key_file)
        self._keys: dict[str, AESGCM] = {}
        self._current: tuple[str, tuple[int, ...]] = ("", ())
        self._reload()

    def __repr__(self) -> str:
        return f"LocalCustody({str(self.key_file)!r}, key_id={self.key_id!r})"

    @property
    def key_id(self) -> str:
        """The key new blobs are wrapped with: the one in the key file now."""
        return self._refresh()

    @classmethod
    def create_key_file(cls, path: Path) -> LocalCustody:
        """Make a new master key file (mode 0600); refuse to overwrite an existing one."""
        write_key_file(Path(path), generate_key())
        return cls(path)

    def reads(self, info: BlobInfo) -> bool:
        return info.backend == BACKEND

    def wrap(self, secret: bytes, context: dict[str, str]) -> bytes:
        secret = check_secret(secret)
        context = check_context(context)
        key_id = self._refresh()
        nonce = os.urandom(NONCE_SIZE)
        ciphertext = self._keys[key_id].encrypt(nonce, secret, _aad(key_id, context))
        return encode_blob(BACKEND, key_id, {"nonce": nonce, "ct": ciphertext})

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        context = check_context(context)
        info, document = decode_blob(blob)
        require_backend(info, BACKEND, self._current[0])
        aead = self._key(info.key_id)
        nonce = field_bytes(document, "nonce", info)
        ciphertext = field_bytes(document, "ct", info)
        if len(nonce) != NONCE_SIZE or len(ciphertext) < TAG_SIZE:
            raise CustodyError(
                f"blob for local key {info.key_id} has a malformed nonce or ciphertext"
            )
        try:
            return aead.decrypt(nonce, ciphertext, _aad(info.key_id, context))
        except InvalidTag:
            raise CustodyError(
                f"blob for local key {info.key_id} does not open with context "
                f"{_describe(context)}: wrong context, or the blob was altered",
            ) from None

    def check(self) -> str:
        _check_mode(self.key_file, os.stat(self.key_file).st_mode)
        probe = {"purpose": "health-check"}
        if self.unwrap(self.wrap(b"probe", probe), probe) != b"probe":
            raise CustodyError("local custody self-test failed")
        return f"local key file {self.key_file} (key {self.key_id})"

    def _refresh(self) -> str:
        """The current key id, re-reading the key file if a rotation replaced it.

        One stat per wrap: wraps are rare (one per deposit) and every broker process must switch
        to the new key as soon as the rotation installs it."""
        key_id, signature = self._current
        try:
            changed = _signature(os.stat(self.key_file)) != signature
        except OSError:
            changed = True  # let _reload name the problem
        return self._reload() if changed else key_id

    def _reload(self) -> str:
        key, found = _read_key(self.key_file)
        key_id = key_id_of(key)
        self._keys.setdefault(key_id, AESGCM(key))
        self._current = (key_id, _signature(found))
        return key_id

    def _key(self, key_id: str) -> AESGCM:
        """The key a blob names: current, already loaded, or a retired key file."""
        if key_id not in self._keys:
            self._refresh()
        if key_id not in self._keys:
            self._keys[key_id] = self._retired(key_id)
        return self._keys[key_id]

    def _retired(self, key_id: str) -> AESGCM:
        path = retired_key_path(self.key_file, key_id)
        if not path.exists():
            raise CustodyError(
                f"blob needs local master key {key_id}; this broker holds key "
                f"{self._current[0]} and no retired key file {path}",
                hint=f"put the key file whose key-id line is {key_id} at {path} (from its "
                "offline backup, or rebuilt with `escrow admin key join`)",
            )
        key = read_key_file(path)
        if key_id_of(key) != key_id:
            raise CustodyError(
                f"retired key file {path} holds key {key_id_of(key)}, not {key_id}",
                hint=f"rename it to {retired_key_path(self.key_file, key_id_of(key)).name}",
            )
        return AESGCM(key)


def _aad(key_id: str, context: dict[str, str]) -> bytes:
    """Bind the ciphertext to its backend, key and context (RFC 8785 canonical JSON)."""
    return canonical_json({"v": 1, "backend": BACKEND, "key_id": key_id, "context": context})


def _describe(context: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(context.items()))


def _check_mode(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise CustodyError(f"master key file {path} is not a regular file")
    if mode & 0o077:
        raise CustodyError(
            f"master key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); refusing to use it",
            hint=f"run: chmod 600 {path}",
        )


def _read_key(path: Path) -> tuple[bytes, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CustodyError(
            f"master key file {path} does not exist",
            hint="run `escrow init` to create it, or point ESCROW_KEY_FILE at it",
        ) from None
    except OSError as e:
        raise CustodyError(f"cannot open master key file {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        found = os.fstat(handle.fileno())
        _check_mode(path, found.st_mode)  # the file opened, not a path
        raw = handle.read(_MAX_KEY_FILE_BYTES + 1)
    corrupt = f"master key file {path} is not a weights-escrow master key"
    try:
        lines = raw.decode("ascii").splitlines()
        if len(raw) > _MAX_KEY_FILE_BYTES or not lines or lines[0].strip() != KEY_FILE_HEADER:
            raise ValueError
        fields = dict(line.split(":", 1) for line in lines[1:] if line.strip())
        fields = {name.strip(): value.strip() for name, value in fields.items()}
        key = base64.b64decode(fields["key"], validate=True)
        stated_id = fields["key-id"]
    except (UnicodeDecodeError, ValueError, KeyError, binascii.Error):
        raise CustodyError(
            corrupt, hint=f"its first line must be {KEY_FILE_HEADER!r}, then key-id: and key:"
        ) from None
    if len(key) != KEY_SIZE:
        raise CustodyError(f"{corrupt}: the key is {len(key)} bytes, expected {KEY_SIZE}")
    if stated_id != key_id_of(key):
        raise CustodyError(
            f"master key file {path} is corrupt: its key-id line says {stated_id}, "
            f"the key hashes to {key_id_of(key)}",
            hint="restore the key file from its offline backup",
        )
    return key, found


def _signature(found: os.stat_result) -> tuple[int, ...]:
    """What changes when a rotation replaces the key file (a rename makes a new inode)."""
    return (found.st_dev, found.st_ino, found.st_mtime_ns, found.st_size)
