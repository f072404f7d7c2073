"""`escrow study fetch`: a study team downloads its captures, checks and decrypts them locally.

The captures are listed through the API a page at a time; each age file is read through a
signed URL the broker gives (as `escrow fetch` reads payloads: broker.client.fetch.ranged), its
SHA-256 checked against the broker's index, decrypted in memory with the team's identity, and
written as `<capture>.json` atomically (a temp file, then a rename; 0600: captures are personal
data). A rerun skips the captures already there, so an interrupted fetch resumes; an interrupted
file leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from broker import age
from broker.client.fetch.ranged import RangeReader
from broker.client.http import BrokerClient
from broker.client.local import private_dir, write_private
from broker.errors import TamperDetected

PAGE = 100


@dataclass
class StudyFetchResult:
    study_id: str
    name: str
    out: Path
    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"study": self.study_id, "name": self.name, "out": str(self.out),
                "fetched": self.fetched, "skipped": self.skipped,
                "bytes_downloaded": self.bytes_downloaded}


class CaptureUrl:
    """A capture's signed URL, asked of the broker again when the store says it expired."""

    def __init__(self, client: BrokerClient, study_id: str, capture_id: str) -> None:
        self.client, self.path = client, (f"/api/v1/studies/{quote(study_id, safe='')}/captures/"
                                          f"{quote(capture_id, safe='')}/url")
        self.url, self.generation, self.size, self.sha256 = "", 0, 0, ""
        self.headers: dict[str, str] = {}
        self.renew()

    def renew(self, seen_generation: int | None = None) -> None:
        answer = self.client.get(self.path)
        self.url = str(answer["url"])
        self.headers = {str(k): str(v) for k, v in dict(answer.get("headers") or {}).items()}
        self.size, self.sha256 = int(answer["size"]), str(answer["sha256"])
        self.generation += 1

    def current(self) -> tuple[str, dict[str, str], int]:
        return self.url, self.headers, self.generation


def capture_file(out: Path, capture_id: str) -> Path:
    return out / f"{capture_id}.json"


def fetch_study(client: BrokerClient, study: str, identities: Sequence[age.Identity], out: Path,
                say: Callable[[str], None] = lambda line: None) -> StudyFetchResult:
    """Every capture of `study` not under `out` yet, checked, decrypted and written there."""
    found = client.get(f"/api/v1/studies/{quote(study, safe='')}")
    result = StudyFetchResult(found["id"], found["name"], out)
    private_dir(out)
    reader = RangeReader(client)
    after: str | None = None
    while True:
        query = {"limit": str(PAGE), **({"after": after} if after else {})}
        page = client.get(f"/api/v1/studies/{quote(result.study_id, safe='')}/captures?"
                          + urlencode(query))
        for listed in page["captures"]:
            capture_id = str(listed["id"])
            target = capture_file(out, capture_id)
            if target.exists():
                result.skipped.append(capture_id)
                continue
            data = _download(reader, client, result.study_id, listed)
            result.bytes_downloaded += len(data)
            write_private(target, _decrypt(data, identities, result.study_id, capture_id))
            result.fetched.append(capture_id)
            say(f"fetched {capture_id} ({len(data)} bytes)")
        after = page.get("next")
        if not after:
            return result


def _download(reader: RangeReader, client: BrokerClient, study_id: str,
              listed: dict[str, Any]) -> bytes:
    signed = CaptureUrl(client, study_id, str(listed["id"]))
    buffer = bytearray(signed.size)
    total = reader.read_into(signed, 0, memoryview(buffer)) if signed.size else 0
    data = bytes(buffer)
    digest = hashlib.sha256(data).hexdigest()
    if total != signed.size or digest != listed["sha256"] or digest != signed.sha256:
        raise TamperDetected(
            f"capture {listed['id']} of study {study_id} is not what the broker recorded "
            f"(SHA-256 {digest}, {total} bytes; recorded {listed['sha256']}, {signed.size} "
            "bytes)",
            hint="tell the broker's operator: the stored object was altered or replaced",
        )
    return data


def _decrypt(data: bytes, identities: Sequence[age.Identity], study_id: str,
             capture_id: str) -> bytes:
    """The capture's JSON, decrypted in memory; it must name this study and capture."""
    plain = io.BytesIO()
    age.decrypt(io.BytesIO(data), plain, identities)
    text = plain.getvalue()
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if (not isinstance(document, dict) or document.get("study") != study_id
            or document.get("capture") != capture_id):
        raise TamperDetected(
            f"capture {capture_id} decrypts to something else than study {study_id}'s "
            "capture of that id",
            hint="tell the broker's operator: a stored capture was swapped",
        )
    return text
