"""The broker client: problem+json errors, bounded retries, no secrets in messages."""

from __future__ import annotations

import json
import threading
import time
import uuid
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

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

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


def problem(status: int, detail: str, hint: str, title: str = "conflict",
            type_: str = "about:blank") -> tuple[int, str, bytes]:
    return (status, "application/problem+json",
            json.dumps({"type": type_, "title": title, "status": status, "detail": detail,
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


def test_a_refused_connection_on_first_contact_fails_at_once_naming_broker() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    reasons: list[str] = []
    slow = RetryPolicy(attempts=6, backoff_s=5, max_backoff_s=30, max_total_s=300)
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as error:
        BrokerClient(url, "esk_id_supersecret", retry=slow,
                     on_retry=lambda reason, wait: reasons.append(reason)).get("/api/v1/x")
    assert time.monotonic() - started < 2 and reasons == []  # no retries, no waiting
    text = error.value.diagnostics()
    assert f"cannot reach a broker at {url}: connection refused" in text
    assert "check --broker (or ESCROW_BROKER)" in text
    assert "nothing finished is lost" not in text and "supersecret" not in text


def test_an_unknown_host_on_first_contact_fails_at_once() -> None:
    with pytest.raises(BrokerUnreachable) as error:
        BrokerClient("http://no-such-broker.invalid", "t", retry=FAST).get("/api/v1/x")
    assert "the host name is not known" in error.value.message
    assert "--broker" in error.value.hint


def test_a_broker_that_answered_and_then_went_away_is_retried_then_explained() -> None:
    Scripted.script, Scripted.seen = [(200, "application/json", b"{}")], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    client = BrokerClient(url, "esk_id_supersecret", retry=FAST)
    assert client.get("/api/v1/x") == {}
    httpd.shutdown()
    httpd.server_close()  # now the port refuses: the broker went away
    reasons: list[str] = []
    client.on_retry = lambda reason, wait: reasons.append(reason)
    with pytest.raises(BrokerUnreachable) as error:
        client.post("/api/v1/x", {})
    text = error.value.diagnostics()
    assert "went away: no answer" in text and "gave up after 3 attempts" in text
    assert "run the same command again" in text and "supersecret" not in text
    assert len(reasons) == 2 and all(r.startswith("no answer: ") for r in reasons)


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


# --- true messages (issue 14 item 13) ------------------------------------------------------------


def test_a_503_problem_from_the_broker_is_its_own_words_not_retried(server: str) -> None:
    Scripted.script = [problem(503, "the database did not answer within 5 s", "see "
                               "`escrow admin health`", title="service unavailable")]
    with pytest.raises(BrokerError) as error:
        BrokerClient(server, "t", retry=FAST).post("/api/v1/deposits", {})
    assert len(Scripted.seen) == 1
    assert error.value.status == 503 and error.value.title == "service unavailable"
    assert error.value.message == "the database did not answer within 5 s"
    assert error.value.hint == "see `escrow admin health`"
    assert not isinstance(error.value, BrokerUnreachable)


def test_a_507_problem_is_the_brokers_words(server: str) -> None:
    Scripted.script = [problem(507, "the local store is full: 10 MiB free, 64 MiB needed",
                               "free space under ESCROW_DATA_DIR", title="insufficient storage")]
    with pytest.raises(BrokerError) as error:
        BrokerClient(server, "t", retry=FAST).post("/api/v1/x", {})
    assert "the local store is full" in error.value.diagnostics()
    assert "free space under ESCROW_DATA_DIR" in error.value.diagnostics()
    assert len(Scripted.seen) == 1


def test_a_proxy_502_is_retried_and_then_said_to_be_a_proxy_not_a_lost_broker(server: str
                                                                              ) -> None:
    Scripted.script = [(502, "text/html", b"<html>Bad Gateway</html>")] * 3
    reasons: list[str] = []
    with pytest.raises(BrokerError) as error:
        BrokerClient(server, "t", retry=FAST,
                     on_retry=lambda reason, wait: reasons.append(reason)).get("/api/v1/x")
    assert len(Scripted.seen) == 3
    text = error.value.diagnostics()
    assert "a proxy or load balancer in front of it answered HTTP 502" in text
    assert "gave up after 3 attempts" in text and "went away" not in text
    assert not isinstance(error.value, BrokerUnreachable)
    assert reasons == ["something in front of the broker answered HTTP 502 without a problem "
                       "description"] * 2


def test_429_is_retried_after_the_wait_asked_for(server: str) -> None:
    Scripted.script = [problem(429, "slow down", "wait", title="too many requests"),
                       (200, "application/json", b'{"ok": true}')]
    waits: list[float] = []
    client = BrokerClient(server, "t", retry=FAST, on_retry=lambda r, wait: waits.append(wait))
    assert client.get("/api/v1/x") == {"ok": True}
    assert len(Scripted.seen) == 2


def test_a_store_problem_from_the_local_store_ends_in_its_words_and_hint(server: str) -> None:
    full = problem(503, "local store could not write part 1: No space left on device",
                   "free space on the broker's disk", title="object store unavailable")
    Scripted.script = [full] * 3 + [problem(507, "the store is full", "free space",
                                            title="insufficient storage")]
    client = BrokerClient(server, "t", retry=FAST)
    with pytest.raises(StoreError) as error:
        client.put_part(server + "/store/v1/signed", {}, 1, lambda: iter([b"x"]))
    assert len(Scripted.seen) == 3  # a 503 may pass: retried
    assert "No space left on device" in error.value.message
    assert "went away" not in error.value.message
    assert error.value.hint == "free space on the broker's disk"
    with pytest.raises(StoreError) as full_error:  # a 507 will not: said at once
        client.put_part(server + "/store/v1/signed", {}, 1, lambda: iter([b"x"]))
    assert len(Scripted.seen) == 4
    assert "the store is full" in full_error.value.message and full_error.value.hint == (
        "free space")


def test_an_s3_503_is_retried_then_named_as_the_stores_answer(server: str) -> None:
    xml = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate</Message></Error>"
    Scripted.script = [(503, "application/xml", xml)] * 3
    with pytest.raises(StoreError) as error:
        BrokerClient(server, "t", retry=FAST).put_part(
            server + "/bucket/key?X-Amz-Signature=deadbeef", {}, 1, lambda: iter([b"x"]))
    assert len(Scripted.seen) == 3
    text = error.value.diagnostics()
    assert "kept failing a part upload: it answered HTTP 503 SlowDown" in text
    assert "went away" not in text and "deadbeef" not in text


# --- Idempotency-Key (issue 14) ---------------------------------------------------------------


def test_every_state_changing_call_carries_a_fresh_idempotency_key(server: str) -> None:
    Scripted.script = [(200, "application/json", b"{}")] * 5
    client = BrokerClient(server, "t", retry=FAST)
    client.post("/api/v1/a", {})
    client.post("/api/v1/a", {})
    client.put("/api/v1/b", {})
    client.delete("/api/v1/c")
    client.get("/api/v1/d")
    keys = [headers.get("Idempotency-Key") for _m, _p, headers, _b in Scripted.seen]
    assert all(str(uuid.UUID(k)) == k for k in keys[:4])
    assert len(set(keys[:4])) == 4  # one per call
    assert keys[4] is None  # a GET changes nothing


def test_a_retry_reuses_the_same_idempotency_key(server: str) -> None:
    Scripted.script = [(502, "text/plain", b"bad gateway"), (504, "text/plain", b""),
                       (200, "application/json", b'{"released": 1}')]
    assert BrokerClient(server, "t", retry=FAST).post("/api/v1/grants/g/keys", {}) == {
        "released": 1}
    keys = {headers["Idempotency-Key"] for _m, _p, headers, _b in Scripted.seen}
    assert len(Scripted.seen) == 3 and len(keys) == 1


def test_an_outcome_unknown_503_is_retried_with_the_same_key(server: str) -> None:
    unknown = problem(503, "the change may or may not have been made", "retry with the same "
                      "Idempotency-Key", title="outcome unknown",
                      type_="https://escrow.example/problems/outcome-unknown")
    Scripted.script = [unknown, (200, "application/json", b'{"state": "approved"}')]
    assert BrokerClient(server, "t", retry=FAST).post("/api/v1/requests/r/approve", {}) == {
        "state": "approved"}
    keys = [headers["Idempotency-Key"] for _m, _p, headers, _b in Scripted.seen]
    assert len(keys) == 2 and keys[0] == keys[1]


def test_an_outcome_that_stays_unknown_is_said_in_the_brokers_words(server: str) -> None:
    unknown = problem(503, "the commit's outcome is not known", "run it again with key K",
                      title="outcome unknown", type_="urn:escrow:outcome-unknown")
    Scripted.script = [unknown] * 3
    with pytest.raises(BrokerError) as error:
        BrokerClient(server, "t", retry=FAST).post("/api/v1/x", {})
    assert error.value.message.startswith("the commit's outcome is not known")
    assert error.value.hint == "run it again with key K"
    assert len({h["Idempotency-Key"] for _m, _p, h, _b in Scripted.seen}) == 1
