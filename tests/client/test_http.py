"""The broker client: problem+json errors, bounded retries, no secrets in messages."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from live import free_port

from broker.client.http import (
    BrokerClient,
    BrokerError,
    BrokerUnreachable,
    RetryPolicy,
    StoreError,
)

FAST = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.02, max_total_s=5)


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next (status, content type, body) of the script."""

    script: list[tuple[int, str, bytes]] = []
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        type(self).seen.append((self.command, self.path, dict(self.headers), body))
        status, content_type, data = type(self).script.pop(0)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"abc"')
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Scripted.script, Scripted.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def problem(status: int, detail: str, hint: str) -> tuple[int, str, bytes]:
    return (status, "application/problem+json",
            json.dumps({"title": "conflict", "status": status, "detail": detail,
                        "hint": hint}).encode())


def test_json_in_and_out_with_the_bearer_token(server: str) -> None:
    Scripted.script = [(200, "application/json", b'{"ok": 1}')]
    client = BrokerClient(server, "esk_id_secret", retry=FAST)
    assert client.post("/api/v1/x", {"a": 1}) == {"ok": 1}
    method, path, headers, body = Scripted.seen[0]
    assert (method, path, json.loads(body)) == ("POST", "/api/v1/x", {"a": 1})
    assert headers["Authorization"] == "Bearer esk_id_secret"


def test_a_problem_becomes_an_error_with_detail_and_hint(server: str) -> None:
    Scripted.script = [problem(409, "acme/x@1 is sealed with different files",
                               "use a new --version")]
    with pytest.raises(BrokerError) as error:
        BrokerClient(server, "t", retry=FAST).post("/api/v1/deposits", {})
    assert error.value.status == 409
    assert error.value.message == "acme/x@1 is sealed with different files"
    assert error.value.hint == "use a new --version"


def test_503_is_retried_then_succeeds(server: str) -> None:
    Scripted.script = [(503, "text/plain", b"busy"), (502, "text/plain", b""),
                       (200, "application/json", b"{}")]
    assert BrokerClient(server, "t", retry=FAST).get("/api/v1/x") == {}
    assert len(Scripted.seen) == 3


def test_the_broker_500_is_not_retried(server: str) -> None:
    Scripted.script = [problem(500, "the broker failed unexpectedly", "retry")]
    with pytest.raises(BrokerError):
        BrokerClient(server, "t", retry=FAST).get("/api/v1/x")
    assert len(Scripted.seen) == 1


def test_a_dead_broker_is_retried_a_bounded_number_of_times_then_explained() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnreachable) as error:
        BrokerClient(url, "esk_id_supersecret", retry=FAST).get("/api/v1/x")
    text = error.value.diagnostics()
    assert "went away" in text and "gave up after 3 attempts" in text
    assert "run the same command again" in text and "supersecret" not in text


def test_retry_settings_come_from_the_environment() -> None:
    policy = RetryPolicy.from_env({"ESCROW_CLIENT_RETRIES": "2", "ESCROW_CLIENT_BACKOFF_S": "0"})
    assert policy.attempts == 3 and list(policy.delays()) == [0.0, 0.0]


def test_a_part_is_streamed_with_a_content_length_and_its_etag_returned(server: str) -> None:
    Scripted.script = [(200, "text/plain", b"")]
    client = BrokerClient(server, "the-token", retry=FAST)
    etag = client.put_part(server + "/store/v1/signed", {}, 6,
                           lambda: iter([memoryview(b"abc"), b"def"]))
    method, _path, headers, body = Scripted.seen[0]
    assert (method, body, etag) == ("PUT", b"abcdef", "abc")
    assert headers["Content-Length"] == "6" and "Transfer-Encoding" not in headers
    assert "Authorization" not in headers  # presigned URLs are called without the token


def test_a_store_refusal_names_the_host_not_the_signed_url(server: str) -> None:
    xml = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    Scripted.script = [(403, "application/xml", xml)]
    with pytest.raises(StoreError) as error:
        BrokerClient(server, "t", retry=FAST).put_part(
            server + "/bucket/key?X-Amz-Signature=deadbeef", {}, 1, lambda: iter([b"x"]))
    assert error.value.url_expired
    assert "AccessDenied: Request has expired" in error.value.message
    assert "deadbeef" not in error.value.diagnostics()


def test_a_non_http_broker_url_is_refused() -> None:
    with pytest.raises(Exception, match="not an http"):
        BrokerClient("ftp://example.org", "t")


def test_the_client_repr_never_shows_the_token() -> None:
    assert "secret" not in repr(BrokerClient("http://b", "esk_id_secret"))
