"""A small hostile HTTP server of a test's own on 127.0.0.1 (the standard library's http.server).

The test gives a function ``answer(exchange)`` that writes whatever bytes it
likes to ``exchange.wfile``: a redirect, a body that never ends, headers a
byte at a time.  Every request is recorded (method, path, headers, body) and
so are the bytes sent, so a test can assert what the client disclosed and
how much it read.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Exchange:
    """What ``answer`` gets: the request, and ways to answer it."""

    handler: BaseHTTPRequestHandler
    request: Seen
    server: HostileServer

    @property
    def wfile(self):  # noqa: ANN201 - the handler's socket file
        return self.handler.wfile

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
             content_type: str = "application/json") -> None:
        head = {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
        lines = [f"HTTP/1.1 {status} Hostile"] + [f"{k}: {v}" for k, v in head.items()]
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        with self.server.lock:
            self.server.bytes_sent += len(data)

    def endless(self, chunk: bytes = b"x" * 65536, pause: float = 0.0) -> None:
        """Send ``chunk`` until the client hangs up or the server stops."""
        while not self.server.stopping.is_set():
            self.write(chunk)
            if pause:
                time.sleep(pause)


@dataclass
class HostileServer:
    answer: Callable[[Exchange], None]
    requests: list[Seen] = field(default_factory=list)
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def handle_one_request(self) -> None:
                try:
                    self.raw_requestline = self.rfile.readline(65537)
                    if not self.raw_requestline or not self.parse_request():
                        self.close_connection = True
                        return
                    length = int(self.headers.get("Content-Length") or 0)
                    seen = Seen(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                    with owner.lock:
                        owner.requests.append(seen)
                    owner.answer(Exchange(self, seen, owner))
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def serving(answer: Callable[[Exchange], None]) -> Iterator[HostileServer]:
    """The server, stopped at the end of the block."""
    server = HostileServer(answer)
    try:
        yield server
    finally:
        server.close()


def finishes(call: Callable[[], object], within: float = 30.0) -> BaseException | object:
    """Run ``call`` on a thread; what it raised (or returned).  A call still running after
    ``within`` seconds fails the test: the hang is the bug these tests look for."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    assert outcome, f"still running after {within:g} s: the client hangs on this server"
    return outcome[0]
