"""The fetch engine: a researcher downloads a granted model version, decrypts it and checks it.

    grant  -> GET  /api/v1/grants                         the caller's grants; one is chosen
    signed -> GET  /api/v1/grants/<id>/manifest           manifest text + Ed25519 signature
    header -> POST /api/v1/grants/<id>/files/<n>/release  age header for the researcher's key,
                                                          and a presigned GET of the payload

Trust: the manifest's signature is checked with the broker's manifest key as PINNED on first
contact (`pins.py`), never with a key the broker sends along; every plaintext SHA-256 is checked
against that signed manifest. Paths come from the manifest and are checked again here (no
`..`, absolute path, backslash; the resolved path stays under --out).

Transfer: each payload is cut into blocks of whole encrypted chunks (16-byte nonce, then
chunks of 64 KiB + 16); `jobs` threads fetch blocks with ranged GETs and decrypt them
(ChaCha20-Poly1305 releases the GIL), and the file's own thread writes them in order to
`<file>.part` and hashes them. Memory is a fixed pool of `jobs + 2` block buffers shared by all
files, whatever their size. A file is renamed into place only when its SHA-256 matches.

Resume: `<file>.part` always holds whole 64 KiB plaintext chunks in order. A re-run re-hashes
that prefix from disk (SHA-256 is sequential) and continues at the matching ciphertext offset,
nonce + n x (65536 + 16), with HTTP Range: nothing on disk is downloaded again. A small 0600
state file, kept in the client's config directory (`fetch/<hash of --out>.json`, never in --out,
so a finished --out holds exactly the deposit's files), says which deposit the .part files
belong to and which finished files were verified (by size, mtime and inode), so a re-run skips
them.

`--age-files` writes `NAME.age` = released header + payload for the plain `age -d` tool; with an
identity it still decrypts in memory to check the SHA-256 (plaintext is never writte
The package, one module per concern; this module is its public face (what `escrow fetch`, the
demo and the tests use):

- `manifest`: the target, the grant chosen, the signed manifest checked against the pinned key;
- `release`: asking the broker for a file's key (header + presigned payload URL);
- `ranged`: ranged GETs of payload URLs, with retries;
- `pipeline`: blocks fetched in parallel into a fixed pool of buffers, consumed in order;
- `state`: the resume state file;
- `output`: files on disk (paths under --out, re-reading a kept .part);
- `engine`: the `Fetcher` that runs a fetch, plain or as .age files;
- `common`: options, the manifest's files, outcomes, errors.
"""

from broker.client.fetch.common import (
    DEFAULT_JOBS,
    FetchOptions,
    FetchResult,
    FileIntegrityError,
    FileOutcome,
    WrongIdentity,
)
from broker.client.fetch.engine import Fetcher
from broker.client.fetch.manifest import manifest_files
from broker.client.fetch.output import output_path
from broker.client.fetch.state import STATE_FILE, state_path

__all__ = [
    "DEFAULT_JOBS",
    "STATE_FILE",
    "FetchOptions",
    "FetchResult",
    "FileOutcome",
    "FileIntegrityError",
    "Fetcher",
    "WrongIdentity",
    "manifest_files",
    "output_path",
    "state_path",
]
