"""Bounded input: bodies have a size limit and are read only after the caller is known; every
malformed value answers a 4xx problem naming the field; a deposit's files obey one layout rule.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
from urllib.parse import urlsplit

import pytest

from broker import age
from broker.adapters.db.uow import UnitOfWork
from broker.errors import Unavailable

HUGE = 100 * 1024 * 1024
# The routes that read a JSON body (the first five parsed it before checking the caller).
BODY_ROUTES = [
    "/api/v1/me/keys",
    "/api/v1/me/keys/k1/proof",
    "/api/v1/orgs/acme-ai/members",
    "/api/v1/roles",
    "/api/v1/ndas/acme-research-nda/signatures",
    "/api/v1/deposits",
    "/api/v1/requests",
]


class CountingBody(io.RawIOBase):
    """`size` bytes of a JSON-looking body that records how many were read."""

    def __init__(self, size: int) -> None:
        self.size, self.position, self.read_bytes = size, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # the test client measures the body by seeking (reads none)
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[
            whence] + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.size - self.position))
        buffer[:n] = b"[" * n
        self.position += n
        self.read_bytes += n
        return n


def post_unread(client, path: str, size: int, headers: dict | None = None):
    body = CountingBody(size)
    response = client.post(path, input_stream=body, content_length=size,
                           content_type="application/json", headers=headers or {})
    return response, body.read_bytes


def problem(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    for word in words:
        assert word in response.json["detail"], response.json
    return response.json


# --- 1 and 2: a size limit, and the caller before the body -----------------------------------


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_anonymous_huge_body_is_refused_unread(client, path) -> None:
    response, read = post_unread(client, path, HUGE)
    problem(response, 401, "log in")
    assert read == 0


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_anonymous_malformed_body_gets_401_not_400(client, path) -> None:
    response = client.post(path, data=b"\xff{not json", content_type="application/json")
    problem(response, 401)


def test_oversized_body_is_413_with_the_limit_before_reading(lab) -> None:
    response, read = post_unread(lab.client, "/api/v1/deposits", HUGE, lab.auth)
    body = problem(response, 413, f"at most {8 * 1024 * 1024} bytes", f"this one is {HUGE}")
    assert "send only the fields" in body["hint"]
    assert read == 0
    # Other JSON bodies: 1 MiB.
    response, read = post_unread(lab.client, "/api/v1/requests", 1024 * 1024 + 1, lab.auth)
    problem(response, 413, f"at most {1024 * 1024} bytes")
    assert read == 0


def test_part_upload_is_limited_to_its_part(lab) -> None:
    data = b"w" * 1000
    made = lab.open({"model.bin": data})
    base = f"/api/v1/deposits/{made['deposit_id']}/files/0"
    assert lab.post(base + "/upload").status_code == 200
    header, payload = lab.encrypt(made["recipient"], data)
    assert lab.client.put(base + "/header", headers=lab.auth, json={
        "header": base64.b64encode(header).decode()}).status_code == 200
    url = urlsplit(lab.post(base + "/parts", {"numbers": [1]}).json["parts"][0]["url"]).path
    response, read = post_unread(lab.client, url, len(payload) + 1)  # POST: wrong method
    assert response.status_code == 405 and read == 0
    body = CountingBody(len(payload) + 1)
    response = lab.client.put(url, input_stream=body, content_length=len(payload) + 1)
    problem(response, 413, f"part 1 is {len(payload)} bytes at most", "was not read")
    assert body.read_bytes == 0
    assert lab.client.put(url, data=payload).status_code == 200
    done = lab.post(base + "/complete", {"sha256": hashlib.sha256(data).hexdigest()})
    assert done.status_code == 200, done.json


def _status_before_sending(url: str, request: bytes, first: int = 65536) -> tuple[int, bytes]:
    """Send the head of a request and `first` bytes of its body, then read the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(request + b"[" * first)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), answer


def test_real_server_answers_before_the_body_is_sent(broker_server) -> None:
    """gunicorn, as deployed: the refusal arrives while 99.9% of a 100 MB body is unsent."""
    host = urlsplit(broker_server.url).netloc.encode()
    head = (b"POST %s HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n")
    status, answer = _status_before_sending(
        broker_server.url, head % (b"/api/v1/me/keys", HUGE, b""))
    assert status == 401, answer
    auth = b"Authorization: Bearer " + broker_server.token.encode() + b"\r\n"
    status, answer = _status_before_sending(
        broker_server.url, head % (b"/api/v1/deposits", HUGE, auth))
    assert status == 413 and b"application/problem+json" in answer, answer


# --- 3: malformed values answer 4xx naming the field -------------------------------------------

OPEN = {"model": "acme-ai/gpt-small", "version": "2024-05"}


@pytest.mark.parametrize(("body", "field"), [
    ({**OPEN, "files": "model.bin"}, "'files' must be a list"),
    ({**OPEN, "files": {"path": "a"}}, "'files' must be a list"),
    ({**OPEN, "files": [1]}, "files[0] must be an object"),
    ({**OPEN, "files": [{"path": 5, "size": 1}]}, "files[0] must be an object"),
    ({**OPEN, "files": [{"path": "a", "size": 2**64}]}, "'files[0].size'"),
    ({**OPEN, "files": [{"path": "a", "size": 2**62}]}, "would not fit"),
    ({**OPEN, "files": [{"path": "a\x00b", "size": 1}]}, "'files[0].path' contains a NUL"),
    ({**OPEN, "version": None}, "'version' must be a string, not null"),
    ({"model": "acme-ai/gpt-small"}, "'version' is missing"),
    ({**OPEN, "model": ["acme-ai/x"]}, "'model' must be a string"),
    ({**OPEN, "extra_recipients": 5}, "'extra_recipients' must be a list of strings"),
    ({**OPEN, "extra_recipients": ["age1nope"]}, "recipient"),
    ({**OPEN, "classical": "yes"}, "'classical' must be true or false"),
])
def test_malformed_open_is_a_4xx_naming_the_field(lab, body, field) -> None:
    problem(lab.post("/api/v1/deposits", body), 422, field)


def test_lone_surrogate_is_a_4xx_naming_the_field(lab) -> None:
    raw = ('{"model": "acme-ai/gpt-small", "version": "1", '
           '"files": [{"path": "a\\ud800", "size": 1}]}')
    response = lab.client.post("/api/v1/deposits", data=raw, headers=lab.auth,
                               content_type="application/json")
    problem(response, 422, "'files[0].path' is not valid Unicode")


def test_deeply_nested_json_is_a_400(lab) -> None:
    response = lab.client.post("/api/v1/deposits", data="[" * 200_000, headers=lab.auth,
                               content_type="application/json")
    problem(response, 400, "not valid JSON")


def test_files_of_a_researcher_are_not_read_before_the_role(client, make_person) -> None:
    token = make_person("rosa@uni.example").token
    response = client.post("/api/v1/deposits", json={**OPEN, "files": "oops"},
                           headers={"Authorization": f"Bearer {token}"})
    problem(response, 403)


def test_malformed_path_and_query_values(lab, make_person) -> None:
    made = lab.open({"model.bin": b"x"})
    problem(lab.get("/api/v1/deposits/ab%00cd"), 422, "'path parameter deposit_id' contains a NUL")
    too_big = 2**64
    response = lab.post(f"/api/v1/deposits/{made['deposit_id']}/files/{too_big}/upload")
    problem(response, 422, "'path parameter index'", "past a 64-bit integer")
    auditor = {"Authorization": f"Bearer {make_person('al@x.example', (), ('auditor',)).token}"}
    response = lab.client.get("/api/v1/audit/events?actor=a%00b", headers=auditor)
    problem(response, 422, "'query parameter actor' contains a NUL")


def test_header_that_is_not_ascii_base64(lab) -> None:
    made = lab.open({"model.bin": b"x"})
    base = f"/api/v1/deposits/{made['deposit_id']}/files/0"
    assert lab.post(base + "/upload").status_code == 200
    for bad in ("é" * 8, "not base64!", 5):
        response = lab.client.put(base + "/header", headers=lab.auth, json={"header": bad})
        problem(response, 422, "'header' must be")


def test_a_failed_open_leaves_no_identity_object(lab, escrow, monkeypatch) -> None:
    def failing_commit(self) -> None:
        raise Unavailable("database: the change could not be committed and was not made")

    monkeypatch.setattr(UnitOfWork, "commit", failing_commit)
    response = lab.post("/api/v1/deposits", {**OPEN, "files": [{"path": "a", "size": 1}]})
    problem(response, 503)
    monkeypatch.undo()
    assert escrow.store.list_keys("deposits/") == []
    opened = lab.open({"a": b"x"})  # and the next open works, with its object
    wrapped = f"deposits/{opened['deposit_id']}/identity.wrapped"
    assert escrow.store.list_keys("deposits/") == [wrapped]


# --- 4: one layout rule --------------------------------------------------------------------------


@pytest.mark.parametrize(("paths", "words"), [
    (["a", "a/b"], ("'a' is a file and also a directory holding 'a/b'",)),
    (["x/A", "x/a/b.bin"], ("'x/A' is a file and also a directory", "letter case")),
    (["A.bin", "a.bin"], ("differ only in letter case", "macOS and Windows")),
    (["Straße.bin", "STRASSE.bin"], ("differ only in letter case",)),
    (["w.bin", "w.bin"], ("names 'w.bin' twice",)),
])
def test_open_refuses_a_layout_the_client_cannot_write(lab, escrow, paths, words) -> None:
    files = [{"path": p, "size": 1} for p in paths]
    body = problem(lab.post("/api/v1/deposits", {**OPEN, "files": files}), 422, *words)
    assert body["hint"]
    assert escrow.store.list_keys("deposits/") == []


def test_fetch_applies_the_same_rule() -> None:
    from broker.client.fetch import manifest_files
    from broker.errors import TamperDetected

    def entry(n: int, path: str) -> dict:
        return {"path": path, "size": 1, "sha256": "0" * 64,
                "header": f"files/{n}.header", "payload": f"files/{n}.payload"}

    for paths, words in ((["a", "a/b"], "is a file and also a directory"),
                         (["M.bin", "m.bin"], "differ only in letter case")):
        with pytest.raises(TamperDetected, match=words):
            manifest_files({"files": [entry(n, p) for n, p in enumerate(paths)]})
    assert len(manifest_files({"files": [entry(0, "a/b"), entry(1, "a/c")]})) == 2


def _register(lab, recipients_extra: list[str], encrypt_to: list,
              version: str = "1") -> object:
    data = b"weights"
    made = lab.open({"model.bin": data}, version=version, extra_recipients=recipients_extra)
    base = f"/api/v1/deposits/{made['deposit_id']}/files/0"
    assert lab.post(base + "/upload").status_code == 200
    out = io.BytesIO()
    escrow_recipient = age.parse_recipient(made["recipient"])
    age.encrypt(io.BytesIO(data), out, [escrow_recipient, *encrypt_to],
                allow_classical_with_pq=True)
    stream = io.BytesIO(out.getvalue())
    age.read_header(stream)
    header = out.getvalue()[:stream.tell()]
    return lab.client.put(base + "/header", headers=lab.auth,
                          json={"header": base64.b64encode(header).decode()})


def test_header_with_an_undeclared_recipient_is_refused(lab) -> None:
    stranger = age.generate_hybrid_identity().to_recipient()
    response = _register(lab, [], [stranger])
    body = problem(response, 422, "1 mlkem768x25519 stanza beyond the escrow recipient",
                   "0 extra recipient(s)")
    assert "declared when the deposit is opened" in body["hint"]


def test_header_with_declared_extra_recipients_is_accepted(lab) -> None:
    lab_key = age.generate_hybrid_identity().to_recipient()
    response = _register(lab, [str(lab_key)], [lab_key])
    assert response.status_code == 200, response.json


def test_header_with_an_ssh_key_other_than_the_declared_one_is_refused(lab) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    declared, other = (age.SSHEd25519Identity(Ed25519PrivateKey.generate()).to_recipient()
                       for _ in range(2))
    problem(_register(lab, [str(declared)], [other]), 422, "1 ssh-ed25519 (key tag")
    assert _register(lab, [str(declared)], [declared], version="2").status_code == 200


def test_stanza_count_rule_is_pure() -> None:
    escrow_id = age.generate_hybrid_identity()
    extra = age.generate_x25519_identity().to_recipient()
    header = age.new_header(age.new_file_key(), [escrow_id.to_recipient(), extra],
                            allow_classical_with_pq=True)
    assert age.unexpected_stanzas(header, [escrow_id.to_recipient(), extra]) == []
    assert age.unexpected_stanzas(header, [escrow_id.to_recipient()]) == ["1 X25519 stanza"]
    assert json.dumps(age.unexpected_stanzas(header, [])) == '["1 mlkem768x25519 stanza", ' \
        '"1 X25519 stanza"]'
