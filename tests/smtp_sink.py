"""A real SMTP server for tests (aiosmtpd), run as its own process:

    python tests/smtp_sink.py DIRECTORY PORT [ANSWER]

Each message received is written to DIRECTORY as one file (the envelope's recipients on the
first line, then the message). ANSWER (e.g. "550 5.1.1 no such user" or "451 try later"), when
given, is the answer to every RCPT: the server then refuses every message that way.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory: Path, answer: str | None) -> None:
        self.directory, self.answer = directory, answer

    async def handle_RCPT(self, server, session, envelope, address, options):
        if self.answer:
            return self.answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns()}.eml"
        text = ",".join(envelope.rcpt_tos) + "\n" + envelope.content.decode("utf-8", "replace")
        (self.directory / f".{name}").write_text(text)
        (self.directory / f".{name}").rename(self.directory / name)  # whole, or not there
        return "250 Message accepted"


def main() -> None:
    directory, port = Path(sys.argv[1]), int(sys.argv[2])
    answer = sys.argv[3] if len(sys.argv) > 3 else None
    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(Sink(directory, answer), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"smtp-sink listening on 127.0.0.1:{port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait(3600)  # a test run never needs it longer
    controller.stop()


if __name__ == "__main__":
    main()
