"""Wall-clock deadlines for HTTP exchanges.

requests and urllib3 bound each socket operation (the connect, each read),
never a whole exchange: a server that sends its headers or body a byte every
few seconds never trips a read timeout and holds the client forever.  Here
every exchange runs under a :class:`Deadline`.  One daemon thread per process
(:class:`_Watchdog`) keeps the deadlines in flight ordered by expiry; when one
passes, it shuts down the socket of that exchange, the blocked read fails at
once, and the connection pool refuses to open another connection for it
(urllib3 would otherwise retry the read).  The transport then reports the
deadline, not a connection error.

A deadline long enough for a large file on a slow link is far too long for a
server that trickles a small answer a byte a second, so an exchange also has a
floor on its speed, as curl's ``--speed-limit``/``--speed-time`` do: its headers
must arrive within :data:`HEADER_WINDOWS` read timeouts, and once they have,
every read timeout's worth of time spent waiting on the body must bring at
least ``min_speed`` bytes a second (time the reader spends elsewhere, writing
to disk or in the caller's code, is not counted).  The bytes are counted as
urllib3 hands them over.

The connection classes also close a retried answer's connection instead of reading
its body to the end (urllib3 drains it to reuse the connection, which an
endless body turns into a hang).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse

__all__ = ["Deadline", "DeadlineExceeded", "WatchedAdapter", "start"]

#: a retried answer's body up to this size is still read, so its connection can be reused
_DRAIN_LIMIT = 64 * 1024
#: read timeouts within which an answer's headers must have arrived (they come in one packet or two)
HEADER_WINDOWS = 3
#: slowest body accepted, in bytes a second over a read timeout's worth of waiting (curl's --speed-limit)
MIN_SPEED = 1024


class DeadlineExceeded(Exception):
    """The exchange ran past its deadline (raised inside the connection pool)."""


class Deadline:
    """The wall-clock bound of one exchange, armed until :meth:`stop`; with ``stall`` (the read
    timeout) also a floor of ``min_speed`` bytes a second on it (see the module docstring)."""

    def __init__(self, seconds: float, stall: float | None = None, min_speed: float = MIN_SPEED) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.expires_at = self.started + seconds
        self.expired = False
        self.stopped = False
        #: why it expired, for the error message (None: the wall-clock deadline)
        self.why: str | None = None
        self.stall = stall if stall and stall > 0 else None
        self.min_speed = min_speed
        self.received = 0
        self.headers_at: float | None = None
        self._asked_at = self.started
        self._reading = 0
        self._left_at: float | None = self.started
        self._window_received = 0
        self._window_outside = 0.0
        self._connection: Any = None
        self._lock = threading.Lock()

    # the reads of the exchange, counted for the speed floor
    def headers_arrived(self) -> None:
        self.headers_at = time.monotonic()

    def reading(self) -> None:
        with self._lock:
            if self._reading == 0 and self._left_at is not None:
                self._window_outside += time.monotonic() - self._left_at
                self._left_at = None
            self._reading += 1

    def read_done(self, count: int) -> None:
        with self._lock:
            self.received += count
            self._reading = max(0, self._reading - 1)
            if self._reading == 0:
                self._left_at = time.monotonic()

    def _too_slow(self, window: float) -> str | None:
        """Why the last ``window`` seconds were too slow (None: they were not), and a new window begun."""
        now = time.monotonic()
        if self.headers_at is None:
            assert self.stall is not None
            if now - self._asked_at >= HEADER_WINDOWS * self.stall:
                return (f"no answer headers within {HEADER_WINDOWS * self.stall:g} s ({HEADER_WINDOWS} read "
                        "timeouts): the server trickles them")
            return None
        with self._lock:
            if self._reading == 0 and self._left_at is not None:
                self._window_outside += now - self._left_at
                self._left_at = now
            waited = window - self._window_outside
            got = self.received - self._window_received
            self._window_received = self.received
            self._window_outside = 0.0
        if now - window < self.headers_at:
            return None  # the window began before the headers: the next one is judged
        if waited >= window / 2 and got < self.min_speed * waited:
            return (f"the body came at {got / max(waited, 1e-9):.0f} bytes/s over {waited:.0f} s, below the "
                    f"{self.min_speed:g} bytes/s accepted (the server trickles it)")
        return None

    def attach(self, connection: Any) -> None:
        """The connection the exchange now uses (set by the pool, also for urllib3's retries)."""
        with self._lock:
            if self.expired:
                raise DeadlineExceeded(f"no complete answer within {self.seconds:g} s")
            self._connection = connection
            # urllib3 retrying within the exchange (a read timeout, a reset): the headers' time starts again
            self._asked_at = time.monotonic()
            self.headers_at = None

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            self._connection = None
        if getattr(_current, "deadline", None) is self:
            _current.deadline = None

    def _expire(self, why: str | None = None) -> None:
        with self._lock:
            if self.stopped:
                return
            self.expired = True
            self.why = why
            sock = getattr(self._connection, "sock", None)
        if sock is not None:
            # the plain socket's shutdown, also under TLS: it wakes a read blocked on the descriptor
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that expires the deadlines in flight, earliest first."""

    def __init__(self) -> None:
        # (when, order, deadline, what): what is 0 for the deadline itself, else a speed check's window
        self._heap: list[tuple[float, int, Deadline, float]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: Deadline) -> None:
        with self._wake:
            earliest = self._heap[0][0] if self._heap else None
            self._push(deadline.expires_at, deadline, 0.0)
            if deadline.stall is not None:
                self._push(deadline.started + deadline.stall, deadline, deadline.stall)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="isicarchive-deadlines", daemon=True)
                self._thread.start()
            elif earliest is None or self._heap[0][0] < earliest:
                # woken only when its next wake-up comes sooner: a wake-up per request (a thread switch
                # and a pass over the heap each) cost a bulk download's every request for nothing
                self._wake.notify()

    def _push(self, when: float, deadline: Deadline, what: float) -> None:
        heapq.heappush(self._heap, (when, next(self._order), deadline, what))

    def _run(self) -> None:
        while True:
            with self._wake:
                # stopped deadlines leave the heap when they come up; nothing else needs them
                while self._heap and self._heap[0][2].stopped:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait(60.0)
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                when, _, deadline, window = heapq.heappop(self._heap)
            if not window:
                deadline._expire()
                continue
            why = deadline._too_slow(window)
            if why is not None:
                deadline._expire(why)
            else:
                with self._wake:
                    self._push(when + window, deadline, window)


_watchdog = _Watchdog()
_current = threading.local()


def _fresh_watchdog_after_fork() -> None:
    """A forked child has no watchdog thread, and its condition may have been held by the parent's
    at the fork: the child starts a watchdog of its own with the first deadline it arms."""
    global _watchdog, _current
    _watchdog = _Watchdog()
    _current = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_watchdog_after_fork)


def start(seconds: float, stall: float | None = None, min_speed: float = MIN_SPEED) -> Deadline:
    """Arm a deadline for the exchange this thread starts next (a previous one of the thread is stopped);
    with ``stall`` (the read timeout), the speed floor too."""
    previous = getattr(_current, "deadline", None)
    if previous is not None:
        previous.stop()
    deadline = Deadline(seconds, stall, min_speed)
    _current.deadline = deadline
    _watchdog.watch(deadline)
    return deadline


class _UndrainedResponse(HTTPResponse):
    """urllib3's response, its reads counted for the exchange's speed floor, its drain bounded."""

    _isic_watch: Deadline | None = None

    def _watched(self, read: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One of urllib3's reads, its bytes counted for the speed floor while a deadline watches."""
        watch = self._isic_watch
        if watch is None:
            return read(*args, **kwargs)
        watch.reading()
        data = b""
        try:
            data = read(*args, **kwargs)
            return data
        finally:
            watch.read_done(len(data or b""))

    def read(self, *args: Any, **kwargs: Any) -> Any:
        return self._watched(super().read, *args, **kwargs)

    def read1(self, *args: Any, **kwargs: Any) -> Any:
        return self._watched(super().read1, *args, **kwargs)

    def read_chunked(self, *args: Any, **kwargs: Any) -> Any:
        watch = self._isic_watch
        chunks = super().read_chunked(*args, **kwargs)
        if watch is None:
            yield from chunks
            return
        while True:
            watch.reading()
            chunk = b""
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                watch.read_done(len(chunk))
            yield chunk

    def drain_conn(self) -> None:
        remaining = self.length_remaining
        if remaining is not None and remaining <= _DRAIN_LIMIT:
            super().drain_conn()
            return
        # a long or endless body: drop the connection rather than read it
        connection = self.connection
        if connection is not None:
            connection.close()


def _watched(response: HTTPResponse) -> HTTPResponse:
    response.__class__ = _UndrainedResponse  # urllib3 2 builds its HTTPResponse here, not from the pool
    watch = getattr(_current, "deadline", None)
    if watch is not None:
        watch.headers_arrived()
        response._isic_watch = watch  # type: ignore[attr-defined]
    return response


class _UndrainedHTTPConnection(HTTPConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        return _watched(super().getresponse())


class _UndrainedHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        return _watched(super().getresponse())


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _UndrainedHTTPConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        deadline = getattr(_current, "deadline", None)
        if deadline is not None and deadline.expired:  # urllib3 retrying an exchange whose time is up
            raise DeadlineExceeded(f"no complete answer within {deadline.seconds:g} s")
        connection = super()._get_conn(timeout)
        if deadline is not None:
            try:
                deadline.attach(connection)
            except DeadlineExceeded:
                connection.close()  # urlopen puts an empty slot back in its place
                raise
        return connection


class _WatchedHTTPSPool(HTTPSConnectionPool, _WatchedHTTPPool):
    ConnectionCls = _UndrainedHTTPSConnection  # type: ignore[assignment]


class WatchedAdapter(HTTPAdapter):
    """requests' adapter over pools whose exchanges obey :func:`start`'s deadlines."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
