"""The lab's side of the escrow: talk to a broker, encrypt and upload a model directory.

Modules:
- `http`     the broker and object-store client (urllib3), problem+json errors, retries
- `pins`     pin the broker's signing keys on first contact, refuse a changed key
- `scan`     walk a model directory and refuse what cannot be deposited
- `journal`  the 0600 resume journal of a deposit (file keys, nonces, part fingerprints)
- `encrypt`  encrypt and fingerprint parts; hash a file in its own sequential pass
- `deposit`  the deposit engine: open, upload (resumably), finalise, wait for the seal
- `preencrypted`  register files made by the plain `age -r` tool
"""
