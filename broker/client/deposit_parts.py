"""Sending a file's parts: each part's fingerprint is journaled before its bytes go, the part is
PUT to a presigned URL (a fresh one if it expired), and bytes are counted for the progress bar.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from broker.client.encrypt import CipherSource, PlainSource, file_changed
from broker.client.http import BrokerClient, StoreError
from broker.client.journal import FileEntry, Journal
from broker.client.progress import Progress
from broker.domain.parts import Part

__all__ = ["MAX_PRESIGN", "URL_MARGIN", "PartSender", "Presigner", "raise_first"]

MAX_PRESIGN = 100  # the broker's limit per call
URL_MARGIN = timedelta(seconds=60)  # re-presign a URL that expires sooner than this
PUT_ATTEMPTS = 3  # a part whose URL keeps expiring fails after this many


class PartSender:
    """Sends the parts of one file (one encryption key): `send` is called from the part pool."""

    def __init__(self, client: BrokerClient, progress: Progress, journal: Journal, index: int,
                 entry: FileEntry, source: PlainSource | CipherSource, urls: Presigner) -> None:
        self.client, self.progress, self.journal = client, progress, journal
        self.index, self.entry, self.source, self.urls = index, entry, source, urls

    def send(self, part: Part) -> str:
        """PUT one part; its ETag ('' if the store gave none)."""
        fingerprinted = [""]
        sent = [0]

        def check(found: str) -> None:
            # Called before the part's last block is handed out: the bytes encrypted for
            # sending must be the ones fingerprinted. If not, the file changed while it was
            # read, and blocks already sent under this key encrypt other plaintext than the
            # journal records: the key is dropped so that it is never used again.
            if found != fingerprinted[0]:
                self._changed(part)

        def body() -> Iterator[memoryview]:
            fingerprinted[0] = self._write_ahead(part)
            return self._counted(self.source.blocks(part, check), sent)

        for attempt in range(PUT_ATTEMPTS):
            signed = self.urls.get(part.number)
            try:
                return self.client.put_part(signed["url"], signed.get("headers") or {},
                                            part.cipher_size, body)
            except StoreError as error:
                if not error.url_expired or attempt == PUT_ATTEMPTS - 1:
                    raise
                self.urls.expire(part.number)
            except BaseException:
                self.progress.add(-sent[0])
                raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _write_ahead(self, part: Part) -> str:
        """The part's fingerprint, on disk before any of its bytes is sent (this attempt's or a
        retry's): whatever a crash interrupts, a later run can prove the plaintext unchanged
        before it encrypts under this key again."""
        found = self.source.fingerprint(part)
        known = self.entry.fingerprints.get(part.number)
        if known is None:
            self.journal.record_part(self.index, part.number, found)
        elif known != found:
            self._changed(part)
        return found

    def _changed(self, part: Part) -> NoReturn:
        self.journal.forget_file(self.index, self.entry.path)
        raise file_changed(self.source.path, f"part {part.number} changed")

    def _counted(self, blocks: Iterator[memoryview], sent: list[int]) -> Iterator[memoryview]:
        self.progress.add(-sent[0])  # a retry starts counting again
        sent[0] = 0
        for block in blocks:
            yield block
            sent[0] += len(block)
            self.progress.add(len(block))


class Presigner:
    """Presigned part URLs, fetched in batches of up to 100 as workers need them."""

    def __init__(self, client: BrokerClient, base: str, numbers: list[int]) -> None:
        self.client, self.base = client, base
        self.order = numbers
        self.urls: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def get(self, number: int) -> dict[str, Any]:
        with self.lock:
            signed = self.urls.get(number)
            if signed is None or _expiring(signed):
                position = self.order.index(number)
                batch = [n for n in self.order[position:] if n not in self.urls
                         or _expiring(self.urls[n]) or n == number][:MAX_PRESIGN]
                for url in self.client.post(self.base + "/parts", {"numbers": batch})["parts"]:
                    self.urls[url["number"]] = url
                signed = self.urls[number]
            return signed

    def expire(self, number: int) -> None:
        with self.lock:
            self.urls.pop(number, None)


def _expiring(signed: dict[str, Any]) -> bool:
    try:
        expires = datetime.fromisoformat(signed["expires_at"])
    except (KeyError, ValueError):
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires - datetime.now(UTC) < URL_MARGIN


def raise_first(futures: list[Future[None]]) -> None:
    """Wait for every future; on the first failure cancel the rest and raise it."""
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    for future in done:
        error = future.exception()
        if error is not None:
            for other in pending:
                other.cancel()
            wait(pending)
            raise error
