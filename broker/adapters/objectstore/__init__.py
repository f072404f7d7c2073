"""Object store adapters, chosen by `ESCROW_STORAGE_URL`."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from broker.adapters.objectstore.base import ObjectStore
from broker.errors import ConfigError

__all__ = ["ObjectStore", "open_store"]


def open_store(
    storage_url: str,
    *,
    data_dir: Path,
    url_base: str,
    url_secret: bytes,
    s3_endpoint_url: str | None,
    region: str | None = None,
    local_quota_bytes: int | None = None,
) -> ObjectStore:
    """The store `storage_url` names.

    ""                      local store in `data_dir/objects` (the embedded default)
    file:///abs/path        local store in that directory
    s3://bucket/prefix      S3 or any S3-compatible endpoint (`s3_endpoint_url`)

    A local store stages multipart uploads in `data_dir/staging` and serves signed URLs under
    `url_base`; `local_quota_bytes` caps the bytes it may hold (it then answers as a full disk
    would: `StoreFull`). Credentials for S3 come from boto3's usual chain (environment,
    profile, role).
    """
    parts = urlsplit(storage_url)
    if parts.query or parts.fragment:
        raise ConfigError(
            f"storage URL {storage_url!r} has a query or fragment",
            hint="use s3://bucket/prefix or file:///path",
        )
    if storage_url == "" or parts.scheme == "file":
        objects_root = _objects_root(storage_url, data_dir)
        _refuse_keys_inside(objects_root, data_dir)
        from broker.adapters.objectstore.local import LocalStore

        return LocalStore(
            objects_root,
            data_dir / "staging",
            url_base,
            url_secret,
            quota_bytes=local_quota_bytes,
        )
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(
                f"storage URL {storage_url!r} names no bucket", hint="write s3://bucket/prefix"
            )
        # Imported here: boto3 takes a noticeable time to import, and local deployments
        # never need it.
        from broker.adapters.objectstore.s3 import S3Store

        return S3Store(
            parts.netloc,
            unquote(parts.path.lstrip("/")),
            endpoint_url=s3_endpoint_url,
            region=region,
        )
    raise ConfigError(
        f"storage URL {storage_url!r} has an unsupported scheme",
        hint="use s3://bucket/prefix, file:///path, or leave it empty for the local store",
    )


def _objects_root(storage_url: str, data_dir: Path) -> Path:
    """The directory of a local store: `data_dir/objects`, or the path of a file:/// URL."""
    if storage_url == "":
        return data_dir / "objects"
    parts = urlsplit(storage_url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ConfigError(
            f"storage URL {storage_url!r} is not an absolute file URL",
            hint="write file:///absolute/path (three slashes)",
        )
    return Path(unquote(parts.path))


def _refuse_keys_inside(objects_root: Path, data_dir: Path) -> None:
    """The master key and URL signing key live in `data_dir/keys`: never under the objects
    root, where a key name could reach them."""
    root = Path(os.path.realpath(objects_root))
    keys = Path(os.path.realpath(data_dir / "keys"))
    if keys.is_relative_to(root):
        raise ConfigError(
            f"the object store root {root} contains the key directory {keys}",
            hint="point the store at a directory of its own, e.g. file://" + str(root / "objects"),
        )
