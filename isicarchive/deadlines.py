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
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse

__all__ = ["Deadline", "DeadlineExceeded", "WatchedAdapter", "start"]

#: a retried answer's body up to this size is still read, so its connection can be reused
_DRAIN_LIMIT = 64 * 1024


class DeadlineExceeded(Exception):
    """The exchange ran past its deadline (raised inside the connection pool)."""


class Deadline:
    """The wall-clock bound of one exchange, armed until :meth:`stop`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.expired = False
        self.stopped = False
        self._connection: Any = None
        self._lock = threading.Lock()

    def attach(self, connection: Any) -> None:
        """The connection the exchange now uses (set by the pool, also for urllib3's retries)."""
        with self._lock:
            if self.expired:
                raise DeadlineExceeded(f"no complete answer within {self.seconds:g} s")
            self._connection = connection

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            self._connection = None
        if getattr(_current, "deadline", None) is self:
            _current.deadline = None

    def _expire(self) -> None:
        with self._lock:
            if self.stopped:
                return
            self.expired = True
            sock = getattr(self._connection, "sock", None)
        if sock is not None:
            # the plain socket's shutdown, also under TLS: it wakes a read blocked on the descriptor
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that expires the deadlines in flight, earliest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._heap, (deadline.expires_at, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="isicarchive-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._wake.notify()

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
                deadline = heapq.heappop(self._heap)[2]
            deadline._expire()


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


def start(seconds: float) -> Deadline:
    """Arm a deadline for the exchange this thread starts next (a previous one of the thread is stopped)."""
    previous = getattr(_current, "deadline", None)
    if previous is not None:
        previous.stop()
    deadline = Deadline(seconds)
    _current.deadline = deadline
    _watchdog.watch(deadline)
    return deadline


class _UndrainedResponse(HTTPResponse):
    def drain_conn(self) -> None:
        remaining = self.length_remaining
        if remaining is not None and remaining <= _DRAIN_LIMIT:
            super().drain_conn()
            return
        # a long or endless body: drop the connection rather than read it
        connection = self.connection
        if connection is not None:
            connection.close()


class _UndrainedHTTPConnection(HTTPConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        response = super().getresponse()
        response.__class__ = _UndrainedResponse  # urllib3 2 builds its HTTPResponse here, not from the pool
        return response


class _UndrainedHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        response = super().getresponse()
        response.__class__ = _UndrainedResponse
        return response


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
