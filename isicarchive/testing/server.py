"""The local ISIC archive: a real HTTP server on the loopback interface.

It serves the legacy v1 API under ``/api/v1`` (and the current v2 API under
``/api/v2``) from :class:`~isicarchive.testing.generator.ArchiveData`, with
authentication, permissions, paging, fault injection, a request log, Range
requests, an optional bandwidth/latency model and optional HTTPS.

Examples
--------
>>> from isicarchive.testing import LocalArchive
>>> with LocalArchive(seed=1) as archive:            # doctest: +SKIP
...     api = IsicApi(hostname=archive.url)
...     archive.faults.add("status", status=503, probability=0.3)
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .. import _json
from .faults import Fault, FaultInjector
from .generator import ArchiveConfig, ArchiveData, User

__all__ = ["ApiError", "LocalArchive", "Request", "RequestRecord", "Response"]


class ApiError(Exception):
    """Raised by a route to answer with an error status and message."""

    def __init__(self, status: int, message: str, kind: str = "rest", field: str | None = None,
                 payload: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.field = field
        #: the exact JSON body to answer with, where the real server's is known
        self.payload = payload


@dataclass
class Request:
    """What a route handler sees of a request."""

    method: str
    path: str  # the full path, e.g. /api/v1/image/abc
    route: str  # the path below the API root, e.g. image/abc
    api: str  # "v1" or "v2"
    query: dict[str, str]
    headers: Any
    body: bytes
    user: User | None
    base_url: str
    #: the archive's content (routes keep derived views of it between pages)
    data: ArchiveData
    #: every value of each query parameter, in order (``query`` keeps the last, as Django's ``QueryDict[key]``)
    multi_query: dict[str, list[str]] = field(default_factory=dict)

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, default)

    def int_arg(self, name: str, default: int) -> int:
        value = self.query.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise ApiError(400, f"Invalid value for {name}: {value!r} is not an integer.",
                           "validation", name) from None


#: largest request body read (uploads of the official CLI go to storage in parts far smaller)
MAX_REQUEST_BODY = 64 * 1024 * 1024


@dataclass
class Response:
    """A route's answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    #: binary downloads honour Range requests
    ranged: bool = False

    @classmethod
    def json(cls, payload: Any, status: int = 200, **headers: str) -> Response:
        return cls(status, _json.dumps(payload), "application/json", dict(headers))

    @classmethod
    def binary(cls, data: bytes, content_type: str, filename: str | None = None) -> Response:
        headers = {"Accept-Ranges": "bytes"}
        if filename:
            headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        return cls(200, data, content_type, headers, ranged=True)


@dataclass
class RequestRecord:
    """One line of the request log."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    user: str | None
    bytes_sent: int
    fault: str | None
    started: float
    range: str | None = None
    #: whether the request carried a token (Girder-Token or Authorization)
    authorized: bool = False


Handler = Callable[..., Response]  # called with the request and the pattern's named groups


class Router:
    """Method + regular expression → handler, per API version."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, str, re.Pattern[str], Handler]] = []

    def add(self, api: str, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((api, method, re.compile(pattern + r"/?$"), handler))

    def resolve(self, api: str, method: str, route: str) -> tuple[Handler, dict[str, str]] | None:
        if api == "v2":
            return self._resolve_path(method, route)
        allowed = False
        for r_api, r_method, regex, handler in self._routes:
            if r_api != api:
                continue
            match = regex.match(route)
            if match:
                # Girder (v1) and object storage answer HEAD as GET (django-ninja, v2, has no HEAD operation)
                if r_method == method or (method == "HEAD" and r_method == "GET"):
                    return handler, {k: unquote(v) for k, v in match.groupdict().items()}
                allowed = True
        if allowed:
            raise ApiError(405, f"Method {method} not allowed for {route}.")
        return None


    def methods_for(self, api: str, route: str) -> set[str]:
        """The methods some route of ``api`` answers at ``route``."""
        return {m for a, m, regex, _ in self._routes if a == api and regex.match(route)}

    def _resolve_path(self, method: str, route: str) -> tuple[Handler, dict[str, str]] | None:
        """Django's way: the path alone picks one pattern (a literal one before one with parameters, as the
        archive orders its routes), then that pattern's operations the method; another method is a 405."""
        matched = [(r_method, regex, handler) for r_api, r_method, regex, handler in self._routes
                   if r_api == "v2" and regex.match(route)]
        if not matched:
            return None
        chosen = min(matched, key=lambda m: m[1].groups)[1].pattern
        operations = [(r_method, regex, handler) for r_method, regex, handler in matched if regex.pattern == chosen]
        for r_method, regex, handler in operations:
            if r_method == method:
                match = regex.match(route)
                assert match is not None
                return handler, {k: unquote(v) for k, v in match.groupdict().items()}
        # the message carries the allowed methods (the answer's Allow header)
        raise ApiError(405, ", ".join(sorted({m for m, _, _ in operations})))


class LocalArchive:
    """A local ISIC archive server (v1 and v2) for tests, examples and benchmarks.

    Parameters
    ----------
    seed : int
        Seed of the generated content.
    config : ArchiveConfig, optional
        Sizes of the generated content (see :class:`ArchiveConfig`).
    data : ArchiveData, optional
        Ready content, e.g. ``ArchiveData.from_dump(...)`` for real metadata.
    host : str
        Interface to bind; loopback by default.
    port : int, optional
        0 picks a free port.  None (the default): a port derived from the
        seed and the size of the data (in 18000-19999), so that a script
        run twice meets the archive at the same address and its cache folder
        is accepted again (the cache is keyed by the archive's address); a
        free port when that one is taken.
    https : bool
        Serve TLS with a throwaway certificate authority (needs ``trustme``);
        its CA bundle is :attr:`ca_file`.
    latency : float
        Seconds added before every response (a slow network).
    bandwidth : float, optional
        Bytes per second per connection for response bodies.
    total_bandwidth : float, optional
        Bytes per second for the response bodies of all connections together
        (a link the archive shares among its clients): with it, a download
        takes the same transfer time whatever the client, and what a client
        adds on top is its own.
    legacy_v1 : bool
        Serve the legacy v1 API too (default).  ``False`` stands in for
        today's official host, where ``/api/v1`` no longer answers (Django's
        404 page for every path there).

    Attributes
    ----------
    faults : FaultInjector
        Add and remove fault rules at run time.
    log : list of RequestRecord
        Every request served, in the order they arrived (a snapshot taken
        once no request is mid-flight, so a response the client has read is
        always logged).
    data : ArchiveData
        The content; ``data.users`` holds the accounts.
    token_lifetime : float
        Seconds an OAuth access token works (default ten hours).
    gzip : bool
        Compress answers of 200 bytes or more for a client that accepts gzip,
        as the archive's ``GZipMiddleware`` (default); False never compresses.
    url_lifetime : float or None
        Seconds a pre-signed v2 file URL of a private image works (a week;
        None: until :meth:`expire_file_urls`); public images' URLs are
        permanent and unsigned.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        config: ArchiveConfig | None = None,
        data: ArchiveData | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        https: bool = False,
        latency: float = 0.0,
        bandwidth: float | None = None,
        legacy_v1: bool = True,
        total_bandwidth: float | None = None,
    ) -> None:
        self.data = data if data is not None else ArchiveData(seed=seed, config=config)
        self.legacy_v1 = legacy_v1
        self.host = host
        self.port = port if port is not None else 0
        self._stable_port = port is None
        self.https = https
        self.latency = latency
        self.bandwidth = bandwidth
        self.total_bandwidth = total_bandwidth
        # when the shared link is next free to send (monotonic seconds), under its lock
        self._link_free_at = 0.0
        self._link_lock = threading.Lock()
        self.faults = FaultInjector(seed)
        self._log: list[RequestRecord] = []
        # a handler writes its response before it logs it; readers wait for in-flight handlers
        self._log_changed = threading.Condition()
        self._in_flight = 0
        self._tokens: dict[str, User] = {}
        self._token_expiry: dict[str, float] = {}
        #: seconds an OAuth access token lives (shorten it to test refreshing)
        self.token_lifetime: float = 36000.0
        #: seconds a pre-signed v2 file URL of a private image works (about a week, as the archive's;
        #: None: until :meth:`expire_file_urls`); public images' URLs are permanent
        self.url_lifetime: float | None = 7 * 86400.0
        self._storage_key = 0
        #: answer gzip when a client asks, as the archive's GZipMiddleware does (False: never; ~3.6 ms of
        #: server time per 100-record page, which a benchmark of the client alone may want to leave out)
        self.gzip = True
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.ca_file: str | None = None
        self.router = Router()
        from . import oauthroutes, v1routes, v2routes

        if legacy_v1:
            v1routes.register(self)
        v2routes.register(self)
        oauthroutes.register(self)
        from . import snapshot

        snapshot.register(self)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> LocalArchive:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        handler = type("BoundHandler", (_Handler,), {"archive": self})
        server = None
        if self._stable_port and not self.port:
            try:
                server = _Server((self.host, self.stable_port()), handler)
            except OSError:  # taken (another archive of the same data, or another program): any free port
                server = None
        if server is None:
            server = _Server((self.host, self.port), handler)
        if self.https:
            server.socket = self._tls_context().wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"LocalArchive:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stable_port(self) -> int:
        """The port this archive's data asks for when no port is given (18000-19999)."""
        key = f"{self.data.seed}:{len(self.data.images)}:{self.data.config}:{self.https}:{self.legacy_v1}"
        return 18000 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 2000

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> LocalArchive:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tls_context(self) -> ssl.SSLContext:
        try:
            import trustme
        except ImportError as exc:  # pragma: no cover
            raise RuntimeError("HTTPS needs the 'trustme' package: pip install trustme") from exc
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
        self._tmpdir = tempfile.TemporaryDirectory(prefix="isic-local-ca-")
        self.ca_file = os.path.join(self._tmpdir.name, "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        return context

    # ----------------------------------------------------------------- URLs
    @property
    def url(self) -> str:
        """Scheme, host and port, e.g. ``http://127.0.0.1:54321``."""
        scheme = "https" if self.https else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def v1_url(self) -> str:
        return self.url + "/api/v1"

    @property
    def v2_url(self) -> str:
        return self.url + "/api/v2"

    # ---------------------------------------------------------- accounts
    @property
    def credentials(self) -> dict[str, str]:
        """Login → password of every account."""
        return {u.login: u.password for u in self.data.users}

    def issue_token(self, user: User, lifetime: float | None = None) -> str:
        """A new token for ``user``; with ``lifetime`` it stops working after that many seconds."""
        token = secrets.token_hex(24)
        self._tokens[token] = user
        if lifetime is not None:
            self._token_expiry[token] = time.monotonic() + lifetime
        return token

    def token_for(self, login: str) -> str:
        """A fresh token (v1 ``Girder-Token`` or v2 bearer) for an account."""
        return self.issue_token(self.data.users_by_login[login])

    def storage_terms(self) -> tuple[int | None, int]:
        """(expiry, signing key) for the pre-signed file URLs handed out now."""
        expires = int(time.time() + self.url_lifetime) if self.url_lifetime is not None else None
        return expires, self._storage_key

    def expire_file_urls(self) -> None:
        """Make every pre-signed file URL handed out so far stop working (as when they expire)."""
        self._storage_key += 1

    def sign_in_code(self, authorization_url: str, login: str, password: str | None = None) -> str:
        """The code the sign-in page shows once ``login`` signs in (a person's part of the OAuth flow).

        Answer :meth:`IsicApi.sign_in <isicarchive.IsicApi.sign_in>`'s prompt
        with it, or the official CLI's ``isic user login``.
        """
        from .oauthroutes import sign_in_code

        return sign_in_code(authorization_url, login, password or self.credentials[login],
                            verify=self.ca_file or True)

    def revoke_token(self, token: str) -> None:
        self._tokens.pop(token, None)
        self._token_expiry.pop(token, None)

    def user_for_token(self, token: str | None) -> User | None:
        if not token:
            return None
        expiry = self._token_expiry.get(token)
        if expiry is not None and expiry < time.monotonic():
            return None
        return self._tokens.get(token)

    # ------------------------------------------------------------ the log
    @property
    def log(self) -> list[RequestRecord]:
        return self.requests()

    def requests(self, pattern: str = ".*", method: str | None = None,
                 settle: float = 2.0) -> list[RequestRecord]:
        """Logged requests whose path matches ``pattern`` (regex search).

        Waits up to ``settle`` seconds for requests still being handled, so
        that every response a client has already received is in the list.
        """
        regex = re.compile(pattern)
        with self._log_changed:
            self._log_changed.wait_for(lambda: self._in_flight == 0, timeout=settle)
            # in the order the requests arrived: a handler logs after it answers, so a redirect's follow-up
            # (answered on another connection) can be logged before the redirect itself
            ordered = sorted(self._log, key=lambda r: r.started)
            return [r for r in ordered if regex.search(r.path) and (method is None or r.method == method)]

    def clear_log(self) -> None:
        with self._log_changed:
            self._log_changed.wait_for(lambda: self._in_flight == 0, timeout=2.0)
            self._log.clear()

    def bytes_sent(self, pattern: str = ".*") -> int:
        """Body bytes sent for requests matching ``pattern``."""
        return sum(r.bytes_sent for r in self.requests(pattern))

    def _begin_request(self) -> None:
        with self._log_changed:
            self._in_flight += 1

    def _end_request(self, record: RequestRecord | None) -> None:
        with self._log_changed:
            if record is not None:
                self._log.append(record)
            self._in_flight -= 1
            self._log_changed.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-response (as fault tests make them) are normal here.
        pass


class _Handler(BaseHTTPRequestHandler):
    archive: LocalArchive
    protocol_version = "HTTP/1.1"
    server_version = "LocalISICArchive/1.0"
    # Headers and body leave in separate writes; with Nagle's algorithm on, the body's write waits
    # for the client's delayed ACK of the headers (~40 ms per request on a kept-alive connection).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the archive keeps its own log
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    # ------------------------------------------------------------ dispatch
    def _dispatch(self, method: str) -> None:
        self.archive._begin_request()
        record = None
        try:
            record = self._serve(method)
        finally:
            self.archive._end_request(record)

    def _serve(self, method: str) -> RequestRecord:
        archive = self.archive
        started = time.monotonic()
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        declared = (self.headers.get("Content-Length") or "0").strip()
        if not declared.isdigit() or len(declared) > 15 or int(declared) > MAX_REQUEST_BODY:
            # a negative, unreadable or huge length: answered, never read until the connection closes
            self.close_connection = True
            too_large = declared.isdigit()
            status = 413 if too_large else 400
            reason = (f"the request body may be at most {MAX_REQUEST_BODY} bytes" if too_large
                      else "Content-Length is not a length")
            answered = self._send(method, Response.json({"detail": reason}, status), None)
            return RequestRecord(method, path, query, answered[0], None, answered[1], None, started, None, False)
        length = int(declared)
        body = self.rfile.read(length) if length else b""
        api, route = _split_api(path)
        user = archive.user_for_token(_token_from(self.headers))
        fault = archive.faults.pick(method, path, unquote(parts.query.replace("+", " ")))
        if archive.latency:
            time.sleep(archive.latency)
        if fault is not None and fault.kind == "latency":
            time.sleep(float(fault.params.get("seconds", 1.0)))
        response = self._answer(method, path, api, route, query, body, user, fault)
        status, sent = self._send(method, response, fault)
        return RequestRecord(method, path, query, status, user.login if user else None,
                             sent, fault.kind if fault else None, started, self.headers.get("Range"),
                             bool(self.headers.get("Girder-Token") or self.headers.get("Authorization")))

    def _answer(self, method: str, path: str, api: str | None, route: str, query: dict[str, str],
                body: bytes, user: User | None, fault: Fault | None) -> Response:
        if fault is not None:
            early = _early_fault(fault)
            if early is not None:
                return early
        if api not in ("v2", "oauth", "s3", "docs"):
            return self._route(method, path, api, route, query, body, user, fault)
        # the archive's Django middleware around its views (CORS, gzip, security headers): v2framework
        from . import v2framework

        response = v2framework.preflight(method, self.headers) or self._route(method, path, api, route, query,
                                                                              body, user, fault)
        return v2framework.finish(method, self.headers, response, ninja=api == "v2", gzip=self.archive.gzip, api_view=(
            response.status != 301 and not (response.status == 404 and response.content_type.startswith("text/html"))))

    def _route(self, method: str, path: str, api: str | None, route: str, query: dict[str, str],
               body: bytes, user: User | None, fault: Fault | None) -> Response:
        if api is None:
            return _error_response("v1", ApiError(404, f"No such resource: {path}"))
        if api == "v1" and not self.archive.legacy_v1:
            return _django_not_found()
        host = self.headers.get("Host") or f"{self.archive.host}:{self.archive.port}"
        scheme = "https" if self.archive.https else "http"
        request = Request(method, path, route, api, query, self.headers, body, user, f"{scheme}://{host}",
                          self.archive.data, parse_qs(urlsplit(self.path).query, keep_blank_values=True))
        try:
            resolved = self.archive.router.resolve(api, method, route)
            if api == "v2" and route == "openapi.json" and path.endswith("/"):
                return _django_not_found()  # the one v2 path without a slash (ninja's openapi_url)
            if api == "v2" and not path.endswith("/") and route != "openapi.json":
                # Django's APPEND_SLASH: a known route without its slash is redirected, anything else is unknown
                if resolved is None:
                    return _django_not_found()
                query_text = urlsplit(self.path).query
                return Response(301, b"", "text/html; charset=utf-8",
                                {"Location": path + "/" + (f"?{query_text}" if query_text else "")})
            if resolved is None:
                if api == "v2":
                    return _django_not_found()
                raise ApiError(404, f"No matching route for \"{method} {path}\"")
            handler, params = resolved
            response = handler(request, **params) if params else handler(request)
        except ApiError as exc:
            if api == "v2" and exc.status == 405:
                from .v2framework import not_allowed

                return not_allowed(exc.message)
            if api == "oauth" and exc.status == 405:
                from .v2framework import django_view_not_allowed

                return django_view_not_allowed(method, self.archive.router.methods_for(api, route))
            response = _error_response(api, exc)
        if fault is not None and fault.kind == "malformed" and response.content_type.startswith("application/json"):
            response.body = response.body[: max(1, len(response.body) // 2)] + b"<<not json"
        return response

    def _send(self, method: str, response: Response, fault: Fault | None) -> tuple[int, int]:
        """Write the answer; returns the status sent (206/416 for ranges) and the body bytes sent."""
        body = response.body
        status = response.status
        headers = dict(response.headers)
        range_header = self.headers.get("Range")
        if response.ranged and status == 200 and range_header:
            status, body, extra = _apply_range(range_header, body)
            headers.update(extra)
        self.send_response(status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if method == "HEAD":
            return status, 0
        if fault is not None and fault.kind in ("reset", "truncate"):
            part = body[: int(len(body) * float(fault.params.get("fraction", 0.5)))]
            self._write(part)
            self.wfile.flush()
            if fault.kind == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR) if fault.kind == "truncate" else None
            except OSError:
                pass
            return status, len(part)
        self._write(body)
        return status, len(body)

    def _write(self, data: bytes) -> None:
        archive = self.archive
        bandwidth, shared = archive.bandwidth, archive.total_bandwidth
        try:
            if not bandwidth and not shared:
                self.wfile.write(data)
                return
            chunk = max(1024, int(min(rate for rate in (bandwidth, shared) if rate) / 20))
            view = memoryview(data)
            for start in range(0, len(data), chunk):
                piece = view[start:start + chunk]
                if shared:  # the piece waits for its turn on the shared link, and takes its time there
                    with archive._link_lock:
                        now = time.monotonic()
                        turn = max(now, archive._link_free_at)
                        archive._link_free_at = turn + len(piece) / shared
                    time.sleep(max(0.0, turn - now))
                self.wfile.write(piece)
                time.sleep(len(piece) / (bandwidth or shared))  # type: ignore[operator]
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


# the first prefix that matches wins: django-s3-file-field's routes and the docs page before the v2 API
_PREFIXES = {"v1": "/api/v1", "s3": "/api/v2/s3-upload", "docs": "/api/docs", "v2": "/api/v2", "storage": "/storage",
             "oauth": "/oauth"}


def _split_api(path: str) -> tuple[str | None, str]:
    for api, prefix in _PREFIXES.items():
        if path == prefix or path.startswith(prefix + "/"):
            return api, path[len(prefix):].strip("/")
    return None, path.strip("/")


def _token_from(headers: Any) -> str | None:
    token = headers.get("Girder-Token")
    if token:
        return token
    auth = headers.get("Authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def basic_credentials(headers: Any) -> tuple[str, str] | None:
    """``(login, password)`` from an HTTP Basic header, if there is one."""
    auth = headers.get("Authorization") or ""
    if not auth.lower().startswith("basic "):
        return None
    try:
        login, _, password = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return login, password


def _error_response(api: str, exc: ApiError) -> Response:
    payload: dict[str, Any]
    if exc.payload is not None:
        return Response.json(exc.payload, exc.status)
    if api != "v1":
        payload = {"detail": exc.message}
        if exc.status == 400:
            payload["message"] = exc.message  # the official CLI reads "message" of a bad query
        return Response.json(payload, exc.status)
    payload = {"message": exc.message, "type": exc.kind}
    if exc.field:
        payload["field"] = exc.field
    return Response.json(payload, exc.status)


def _django_not_found() -> Response:
    """Django's own 404 page (the archive's answer to a path no route knows)."""
    # ERROR_PAGE_TEMPLATE of django/views/defaults.py, which begins with a line break
    page = ("\n<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n"
            "  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n")
    return Response(404, page.encode(), "text/html; charset=utf-8")


def _early_fault(fault: Fault) -> Response | None:
    """Faults that replace the answer before any route runs."""
    params = fault.params
    if fault.kind == "status":
        status = int(params.get("status", 503))
        headers = {}
        if params.get("retry_after") is not None:
            headers["Retry-After"] = str(params["retry_after"])
        return Response.json({"message": f"Injected fault: HTTP {status}", "type": "rest"}, status, **headers)
    if fault.kind == "html":
        status = int(params.get("status", 502))
        page = f"<html><head><title>{status} Bad Gateway</title></head><body><h1>{status}</h1></body></html>"
        return Response(status, page.encode(), "text/html")
    if fault.kind == "redirect":
        return Response(302, b"", "text/plain", {"Location": str(params["location"])})
    if fault.kind == "wrong_type":
        body = params.get("body", b"[]")
        return Response(200, body if isinstance(body, bytes) else str(body).encode(),
                        str(params.get("content_type", "application/json")))
    return None


def _apply_range(header: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    size = len(body)
    if not match or (match.group(1) == "" and match.group(2) == ""):
        return 200, body, {}
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size - 1
    else:
        start = int(first)
        end = min(size - 1, int(last)) if last else size - 1
    if start >= size or start > end:
        return 416, b"", {"Content-Range": f"bytes */{size}"}
    return 206, body[start:end + 1], {"Content-Range": f"bytes {start}-{end}/{size}"}
