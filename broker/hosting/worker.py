"""`escrow model-worker`: load a version into memory and serve it to the broker.

1. The worker's own login (its account, made by the operator) lists its grants; the hosting
   grant of the version is chosen.
2. Each file's key is released to the worker's key (a `key.released` event each), its payload
   streamed and decrypted into memory, its SHA-256 checked against the signed manifest.
3. The engine is built from those bytes; the bytes are dropped.
4. The HTTP server starts on loopback; the worker registers (`model_worker.loaded`) with its
   URL and receives its id and the secret the broker will send on every call.
5. It heartbeats every `HEARTBEAT_S` with that secret; a refusal (grant revoked or ended)
   stops it. SIGTERM or SIGINT deregisters it (`model_worker.stopped`) and exits.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import requests
from werkzeug.serving import WSGIRequestHandler, make_server

from broker import age
from broker.client.fetch.memory import fetch_into_memory
from broker.client.http import BrokerClient
from broker.errors import Forbidden
from broker.hosting.engine import load_engine
from broker.hosting.server import SECRET_HEADER, WorkerState, make_app

HEARTBEAT_TIMEOUT_S = 5.0  # one heartbeat's HTTP call
MAX_MISSED = 5  # heartbeats that may fail in a row (broker restarting) before the worker stops


@dataclass
class WorkerOptions:
    target: str
    identities: list[age.Identity]
    host: str = "127.0.0.1"
    port: int = 0
    config_dir: Path | None = None


class _StreamingHandler(WSGIRequestHandler):
    """Each streamed token leaves in one packet, at once: werkzeug writes a chunk's size, data
    and end as three writes and flushes after them, so a buffered writer makes them one send,
    and without Nagle's algorithm the send does not wait for the last one's ACK."""

    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams (what threaded implies)
    wbufsize = -1  # buffered: flushed after each chunk
    disable_nagle_algorithm = True


class ModelWorker:
    def __init__(self, client: BrokerClient, options: WorkerOptions,
                 say: Callable[[str], None]) -> None:
        self.client, self.options, self.say = client, options, say
        self.stopping = threading.Event()
        self.worker_id = ""
        self.secret = ""

    def run(self) -> int:
        grant_id, files = fetch_into_memory(
            self.client, self.options.target, self.options.identities, self.options.config_dir,
            say=self.say,
        )
        engine = load_engine(files)
        files.clear()  # the engine holds the weights now; the plaintext bytes go
        state = WorkerState(engine, self.options.target)
        server = make_server(self.options.host, self.options.port, make_app(state), threaded=True,
                             request_handler=_StreamingHandler)
        url = f"http://{self.options.host}:{server.server_port}"
        serving = threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True)
        serving.start()
        try:
            answer = self.client.post("/api/v1/hosted/workers", {"grant_id": grant_id, "url": url})
            self.worker_id, self.secret = str(answer["worker_id"]), str(answer["secret"])
            state.secret = self.secret
            self.say(f"serving {self.options.target} at {url} as worker {self.worker_id}")
            self._stop_on_signals()
            return self._heartbeat(float(answer.get("heartbeat_s", 2.0)))
        finally:
            self._deregister()
            server.shutdown()

    def _stop_on_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _heartbeat(self, every_s: float) -> int:
        missed = 0
        url = f"{self.client.base_url}/api/v1/hosted/workers/{self.worker_id}/heartbeat"
        while not self.stopping.wait(every_s):
            try:
                answer = requests.post(url, headers={SECRET_HEADER: self.secret},
                                       timeout=HEARTBEAT_TIMEOUT_S)
            except requests.RequestException as error:
                missed += 1
                self.say(f"heartbeat failed ({type(error).__name__}), {missed} in a row")
            else:
                if answer.status_code in (401, 403, 404, 409):
                    raise Forbidden(
                        f"the broker refused the worker's heartbeat ({answer.status_code}): "
                        f"{_detail(answer)}",
                        hint="the hosting grant may be revoked or ended: the operator makes a "
                        "new one (escrow hosted allow), then starts the worker again",
                    )
                missed = 0 if answer.ok else missed + 1
            if missed >= MAX_MISSED:
                self.say("the broker did not answer 5 heartbeats in a row: stopping")
                return 1
        return 0

    def _deregister(self) -> None:
        if not self.worker_id:
            return
        try:
            requests.delete(f"{self.client.base_url}/api/v1/hosted/workers/{self.worker_id}",
                            headers={SECRET_HEADER: self.secret}, timeout=HEARTBEAT_TIMEOUT_S)
        except requests.RequestException:
            self.say("could not deregister; the broker drops the worker when heartbeats stop")
        self.worker_id = ""


def _detail(answer: requests.Response) -> str:
    try:
        return str(answer.json().get("detail", answer.text[:200]))
    except ValueError:
        return answer.text[:200]


