"""Asking the broker for a file's key: the released age header and a presigned URL of its payload,
renewed when the URL nears its expiry."""

from __future__ import annotations

import base64
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.client.fetch.common import (
    ManifestFile,
)
from broker.client.http import BrokerClient
from broker.errors import (
    TamperDetected,
)

URL_MARGIN = timedelta(seconds=30)  # ask for a new URL rather than start a GET this close to expiry


class Release:
    """The released header of one file and a fresh presigned URL for its payload."""

    def __init__(self, client: BrokerClient, grant_id: str, mf: ManifestFile) -> None:
        self.client, self.grant_id, self.mf = client, grant_id, mf
        self._lock = threading.Lock()
        self.header = b""
        self.url = ""
        self.url_headers: dict[str, str] = {}
        self.expires_at: datetime | None = None
        self.generation = 0
        self.renew()

    def renew(self, seen_generation: int | None = None) -> None:
        """Ask the broker again (a key release on the log) unless another thread just did."""
        with self._lock:
            if seen_generation is not None and seen_generation != self.generation:
                return
            answer = self.client.post(
                f"/api/v1/grants/{self.grant_id}/files/{self.mf.index}/release"
            )
            mf = self.mf
            if (
                answer.get("path", mf.path) != mf.path
                or answer.get("sha256", mf.sha256) != mf.sha256
            ):
                raise TamperDetected(
                    f"the broker released file {mf.index} as {answer.get('path')!r} "
                    f"({answer.get('sha256')}), but the signed manifest says {mf.path!r} "
                    f"({mf.sha256})",
                    hint="tell the broker's operator",
                )
            try:
                self.header = base64.b64decode(str(answer["header"]), validate=True)
                self.url = str(answer["payload_url"])
            except (KeyError, ValueError):
                raise TamperDetected(
                    f"the broker's key release for {mf.path} is malformed",
                    hint="tell the broker's operator",
                ) from None
            headers = answer.get("payload_url_headers") or {}
            self.url_headers = {str(k): str(v) for k, v in dict(headers).items()}
            self.expires_at = _parse_time(answer.get("payload_url_expires_at"))
            self.generation += 1

    def current(self) -> tuple[str, dict[str, str], int]:
        with self._lock:
            stale = self.expires_at is not None and self.expires_at - datetime.now(UTC) < URL_MARGIN
            generation = self.generation
        if stale:
            self.renew(generation)
        with self._lock:
            return self.url, self.url_headers, self.generation


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
