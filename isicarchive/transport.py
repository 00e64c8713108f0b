"""HTTP for one session: pooling, timeouts, retries, auth scoping, streaming.

One :class:`Transport` owns one :class:`requests.Session`.  Its retry policy
is the only one in the library:

* status 429, 500, 502, 503 and 504 and connection errors are retried by
  urllib3 with exponential backoff, honouring ``Retry-After`` (capped so a
  hostile server cannot park the client for hours);
* failures urllib3 cannot see — a body cut short (``Content-Length`` longer
  than what arrived, a reset mid-body) or JSON that does not parse — are
  retried here with the same backoff;
* whatever still fails becomes :class:`~isicarchive.errors.ArchiveUnavailableError`.

The authentication header is attached only to requests for the archive's own
origin and stripped from redirects to any other host.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError as urllib3_ConnectTimeout
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError
from urllib3.util.retry import Retry

from . import _json, deadlines
from ._version import __version__
from .errors import (  # ArchiveResponseError is imported from here by older code
    ArchiveResponseError,
    ArchiveUnavailableError,
    AuthenticationError,
    IsicError,
    NotFoundError,
    QueryError,
)

__all__ = ["ArchiveResponseError", "RetryPolicy", "Transport", "checked_record", "deadline_of", "iter_pages",
           "record_id"]

log = logging.getLogger("isicarchive.http")


class _HiddenQueries(logging.Filter):
    """Hides the query strings in urllib3's debug lines: pre-signed storage URLs carry their
    signatures and credentials there, and urllib3 logs whole URLs (also inside reprs)."""

    _QUERY = re.compile(r"\?[^\s'\"()]*")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = self._QUERY.sub("?[query hidden]", message), None
        return True


for _name in ("urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager", "urllib3.response",
              "urllib3.util.retry"):
    logging.getLogger(_name).addFilter(_HiddenQueries())

RETRY_STATUSES = (429, 500, 502, 503, 504)
#: seconds before its stated expiry that a token is renewed, so no request races the expiry
TOKEN_RENEWAL_MARGIN = 60.0
_BODY_ERRORS = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up.

    Attributes
    ----------
    retries : int
        Retries per request for transient statuses and connection errors.
    backoff : float
        Base of the exponential backoff in seconds (0.5 → 0.5, 1, 2, 4 …).
    backoff_max : float
        Longest single wait, also the cap on ``Retry-After``.
    body_retries : int
        Extra attempts when a body arrives cut short or is not valid JSON.
    """

    retries: int = 6
    backoff: float = 0.5
    backoff_max: float = 30.0
    body_retries: int = 4

    def delay(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff * (2 ** max(0, attempt - 1)))


class _CappedRetry(Retry):
    """urllib3 Retry whose Retry-After waits are capped, and shared across workers."""

    retry_after_cap: float = 30.0
    pause: _SharedPause | None = None

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        if value is None:
            return None
        value = min(float(value), self.retry_after_cap)
        if self.pause is not None:
            self.pause.hold(value)
        return value

    def new(self, **kw: Any) -> _CappedRetry:
        new = super().new(**kw)
        new.retry_after_cap = self.retry_after_cap
        new.pause = self.pause
        return new

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> _CappedRetry:
        # A name that does not resolve stays unresolved: no retry.  A refused connection (nothing
        # listens, or no route) gets QUICK_CONNECT_RETRIES quick tries, for a server that is just
        # starting: seconds of backoff would only delay the message.
        if isinstance(error, NameResolutionError) or (
                isinstance(error, NewConnectionError) and _refusals(self.history) >= QUICK_CONNECT_RETRIES):
            raise MaxRetryError(_pool, url or "", error)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def get_backoff_time(self) -> float:
        if self.history and isinstance(self.history[-1].error, NewConnectionError):
            return QUICK_CONNECT_DELAY
        return super().get_backoff_time()


#: tries after a refused connection, and the pause between them (together well under 2 s)
QUICK_CONNECT_RETRIES = 2
QUICK_CONNECT_DELAY = 0.2


def _refusals(history: Any) -> int:
    return sum(isinstance(entry.error, NewConnectionError) for entry in history)


class _SharedPause:
    """One back-off for every thread of a session: a 429 pauses them all."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()

    def hold(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)

    def wait(self) -> None:
        remaining = self._until - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)


class _NoCookies(requests.cookies.RequestsCookieJar):
    """A cookie jar that keeps nothing: the library authenticates by header, and a cookie
    (Girder's ``girderToken``) would travel to other ports and hosts and outlive a logout."""

    def set_cookie(self, cookie: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


class _ScopedSession(requests.Session):
    """A Session that keeps no cookies, follows only http(s) redirects, and drops our
    auth header on redirects to another origin."""

    auth_header: str = "Girder-Token"
    max_redirects = 10

    def __init__(self) -> None:
        super().__init__()
        self.cookies = _NoCookies()

    def get_redirect_target(self, response: requests.Response) -> str | None:
        target = super().get_redirect_target(response)
        if target is not None:
            scheme = urlsplit(target).scheme.lower()
            if scheme not in ("", "http", "https"):
                raise _RefusedRedirect(f"answered a redirect to a {scheme}: address, which is never followed")
            if scheme == "http" and urlsplit(response.url).scheme == "https":
                raise _RefusedRedirect("answered a redirect from https to plain http, which is never followed")
        return target

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        prepared_request.headers.pop("Cookie", None)
        if _origin(prepared_request.url or "") != _origin(response.request.url or ""):
            prepared_request.headers.pop(self.auth_header, None)
            prepared_request.headers.pop("Authorization", None)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


#: every transport of this process, so that a forked child can give each its own connections at once
_LIVE: weakref.WeakSet[Transport] = weakref.WeakSet()


def _reopen_after_fork() -> None:
    for transport in list(_LIVE):
        transport._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reopen_after_fork)


class Transport:
    """The HTTP layer of one :class:`~isicarchive.IsicApi` session.

    Parameters
    ----------
    base_url : str
        Root of the API, e.g. ``https://isic-archive.com/api/v1``.
    timeout : float or (float, float)
        Connect and read timeouts in seconds.
    policy : RetryPolicy
    pool_size : int
        Connections kept per host (one per download worker).
    auth_header : str
        ``Girder-Token`` (v1) or ``Authorization`` (v2, bearer).
    debug : bool
        Log every request at INFO on the ``isicarchive.http`` logger.
    verify : bool or str
        TLS verification (a CA bundle path for a local archive's CA).
    deadline : float
        Wall-clock bound of one exchange (headers and body) in seconds;
        downloads add the time their size needs at :data:`MIN_TRANSFER_RATE`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float | tuple[float, float] = (5.0, 60.0),
        policy: RetryPolicy | None = None,
        pool_size: int = 16,
        auth_header: str = "Girder-Token",
        debug: bool = False,
        verify: bool | str | None = None,
        deadline: float = 300.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        #: wall-clock bound of one exchange (headers and body), in seconds
        self.deadline = deadline
        #: slowest answer accepted, in bytes a second over each read timeout (curl's --speed-limit;
        #: headers must come within three read timeouts): a trickle fails in a few read timeouts
        self.min_speed: float = deadlines.MIN_SPEED
        self.policy = policy or RetryPolicy()
        self.debug = debug
        self.pause = _SharedPause()
        # token and its expiry change together: worker threads read them as one pair
        self._credential: tuple[str | None, float | None] = (None, None)
        #: called with a token that expired (or drew a 401); returns a renewed one or None
        self.token_renewer: Callable[[str], str | None] | None = None
        self._auth_header = auth_header
        self._origin = _origin(self.base_url)
        self.request_count = 0
        self._count_lock = threading.Lock()
        self._verify = verify if verify is not None else (
            os.environ.get("ISICARCHIVE_CA_BUNDLE") or os.environ.get("REQUESTS_CA_BUNDLE")
            or os.environ.get("CURL_CA_BUNDLE") or None)
        self._proxies: dict[tuple[str, str, int | None], dict[str, str]] = {}
        self._pool_size = pool_size
        self._open()
        _LIVE.add(self)

    def _open(self) -> None:
        """A new requests Session and connection pool for this process (none of another's sockets)."""
        retry = _CappedRetry(
            total=self.policy.retries,
            connect=self.policy.retries,
            read=self.policy.retries,
            status=self.policy.retries,
            other=0,
            backoff_factor=self.policy.backoff,
            backoff_max=self.policy.backoff_max,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        retry.retry_after_cap = self.policy.backoff_max
        retry.pause = self.pause
        adapter = deadlines.WatchedAdapter(max_retries=retry, pool_connections=4, pool_maxsize=self._pool_size)
        session = _ScopedSession()
        session.auth_header = self._auth_header
        session.headers["User-Agent"] = f"isicarchive/{__version__} (python-requests)"
        # The environment is read here, once: with trust_env requests reads proxies, CA bundles and ~/.netrc
        # for every request (half a millisecond each, a tenth of a page's cost in a metadata sync), and a
        # ~/.netrc entry for the archive's host would replace the bearer token with Basic credentials.
        session.trust_env = False
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session
        self._pid = os.getpid()

    @property
    def session(self) -> requests.Session:
        """This process's requests Session: a process forked from the one that made it gets its own pool,
        since two processes reading answers from one socket take each other's bytes."""
        if self._pid != os.getpid():
            self._after_fork()
        return self._session

    def _after_fork(self) -> None:
        """In a forked child: fresh locks (another thread may have held them at the fork) and fresh
        connections.  The inherited sockets are left to the parent, never closed or shut down here."""
        self.pause = _SharedPause()
        self._count_lock = threading.Lock()
        self._open()

    def __getstate__(self) -> dict[str, Any]:
        """A transport pickled into another process (a spawned data-loader worker) opens its own
        connections there; the token renewal, which belongs to the session's backend, stays behind."""
        state = self.__dict__.copy()
        for name in ("_session", "_count_lock", "pause", "token_renewer", "_pid"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.token_renewer = None
        self._after_fork()
        _LIVE.add(self)

    # ----------------------------------------------------------------- auth
    def set_token(self, token: str | None, expires_at: float | None = None) -> None:
        """Use ``token`` for requests to the archive's own origin (None: anonymous).

        With ``expires_at`` (Unix time) the token is renewed through
        :attr:`token_renewer` shortly before it expires: the archive treats
        an expired token as no token at all, so waiting for a 401 would
        quietly hide private data.
        """
        self._credential = (token, expires_at)

    @property
    def _token(self) -> str | None:
        return self._credential[0]

    def _renew_if_expiring(self) -> None:
        token, expires_at = self._credential
        if expires_at is None or token is None or self.token_renewer is None:
            return
        if time.time() >= expires_at - TOKEN_RENEWAL_MARGIN:
            renewed = self.token_renewer(token)  # the renewer installs the new token with set_token
            if not renewed and time.time() >= expires_at:
                # sending it anyway would quietly make the session anonymous
                raise AuthenticationError("the access token has expired and could not be renewed; sign in again "
                                          "(`isicarchive --api v2 login` or IsicApi.sign_in())")

    @property
    def authenticated(self) -> bool:
        return self._token is not None

    def _renew(self, sent_headers: Mapping[str, str]) -> bool:
        """After a 401: is there a newer token than the one this request carried?"""
        sent = sent_headers.get(self._auth_header)
        if sent is None or self.token_renewer is None:
            return False
        if self._auth_header == "Authorization":
            sent = sent.removeprefix("Bearer ")
        # another thread may have renewed meanwhile: the renewer then hands out that token
        renewed = self.token_renewer(sent)
        return bool(renewed) and renewed != sent

    def _auth_headers(self, url: str) -> dict[str, str]:
        token = self._token
        if token is None or _origin(url) != self._origin:
            return {}
        if self._auth_header == "Authorization":
            return {"Authorization": f"Bearer {token}"}
        return {self._auth_header: token}

    def url(self, endpoint: str) -> str:
        if endpoint.startswith(("http://", "https://")):
            return endpoint
        return f"{self.base_url}/{endpoint.lstrip('/')}"

    # ------------------------------------------------------------- requests
    def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        auth: Any = None,
        json_body: Any = None,
        data: Any = None,
        authenticate: bool = True,
        deadline: float | None = None,
        _renewed: bool = False,
    ) -> requests.Response:
        """Send one request with the retry policy; errors are mapped to :class:`IsicError`.

        A non-2xx answer that is not transient raises (404 → NotFoundError,
        401 → AuthenticationError, 400 → QueryError, others →
        ArchiveResponseError); transient ones that stay transient raise
        ArchiveUnavailableError.  A 401 to a request that carried an expired
        token is retried once with a token from :attr:`token_renewer`.
        ``authenticate=False`` sends no token (the OAuth endpoints need none).

        The whole exchange runs under a wall-clock ``deadline`` (default
        :attr:`deadline`); a streamed response keeps it until it is closed.
        A body that is not streamed is read up to :attr:`max_body_bytes`, an
        error page up to :attr:`max_error_bytes`.  A request that carries
        credentials (a password, a form or JSON body) never follows a redirect.
        """
        url = self.url(endpoint)
        if self._origin[0] == "https" and urlsplit(url).scheme == "http":
            # an address from a record (a pre-signed file URL) would send its signature in clear text
            raise ArchiveResponseError(f"{method} {_safe(url)}: a plain http address from an https archive is never "
                                       "fetched (its query may carry a signature), as such redirects are refused")
        send_headers = dict(headers or {})
        if authenticate and _origin(url) == self._origin:  # storage hosts never see the token: no renewal
            self._renew_if_expiring()
            send_headers.update(self._auth_headers(url))
        # a body (password, refresh token, form) must never be re-sent to wherever a redirect points
        carries_secret = auth is not None or data is not None or json_body is not None
        seconds = deadline or self.deadline
        attempts = self.policy.body_retries + 1
        last_error: Exception | None = None
        for attempt in range(1, attempts + 1):
            self.pause.wait()
            started = time.monotonic()
            watch = deadlines.start(seconds, stall=self._read_timeout(), min_speed=self.min_speed)
            try:
                response = self._send(method, url, params, send_headers, auth, json_body, data,
                                      allow_redirects=not carries_secret)
            except requests.exceptions.RetryError as exc:
                watch.stop()
                last_error = exc
                break
            except _BODY_ERRORS + (deadlines.DeadlineExceeded,) as exc:
                watch.stop()
                if watch.expired:
                    raise self._too_slow(method, url, seconds, watch.why) from None
                last_error = exc
                if _retries_exhausted(exc):  # urllib3 already retried this connection failure
                    break
                # a body cut short (reset, truncation, timeout mid-body) lands here
                self._log(method, url, params, None, started, f"{type(exc).__name__}")
                if attempt < attempts:
                    time.sleep(self.policy.delay(attempt))
                continue
            except (requests.exceptions.TooManyRedirects, requests.exceptions.InvalidSchema,
                    requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, _RefusedRedirect) as exc:
                watch.stop()
                raise ArchiveResponseError(f"{method} {_safe(url)}: {_redirect_problem(exc)}") from None
            finally:
                with self._count_lock:
                    self.request_count += 1
            self._log(method, url, params, response.status_code, started)
            try:
                return self._answer(response, watch, method, url, stream=stream, carries_secret=carries_secret,
                                    renewable=response.status_code == 401 and authenticate and not _renewed
                                    and self._renew(send_headers))
            except _Retry as retry:
                last_error = retry.error
                break
            except _Renewed:
                return self.request(method, endpoint, params=params, headers=headers, stream=stream, auth=auth,
                                    json_body=json_body, data=data, deadline=deadline, _renewed=True)
            except _BODY_ERRORS as exc:  # the body of an answer read here arrived cut short
                last_error = exc
                self._log(method, url, params, None, started, f"{type(exc).__name__}")
                if attempt < attempts:
                    time.sleep(self.policy.delay(attempt))
        raise ArchiveUnavailableError(
            _unavailable(method, url, last_error),
            status=last_error.status if isinstance(last_error, IsicError) else None, url=_safe(url),
        )

    def _send(self, method: str, url: str, params: Mapping[str, Any] | None, headers: Mapping[str, str], auth: Any,
              json_body: Any, data: Any, *, allow_redirects: bool) -> requests.Response:
        """What ``session.request(..., stream=True)`` does for this transport's session, without its merges.

        ``Session.request`` merges the session's cookies, environment and settings into every request
        (fresh cookie jars, twice, and the environment's settings): a fifth of a request's CPU, the
        largest share of a bulk download's per-file cost.  This session has nothing to merge: its
        cookie jar keeps nothing, it reads no environment (``trust_env`` is off; proxies and CA bundles
        were read when the transport was made) and has no auth, params or certificate of its own.  So
        the request is prepared from our headers over the session's and sent as requests sends it
        (redirects, with the auth header dropped on another origin, and its errors).
        """
        session = self.session
        prepared = requests.PreparedRequest()
        merged = requests.structures.CaseInsensitiveDict(session.headers)
        merged.update(headers)
        for key in [key for key, value in merged.items() if value is None]:  # as requests' merge drops them
            del merged[key]
        if isinstance(params, Mapping):
            # None: no parameters to encode (an empty mapping costs requests a slow check of a typing Protocol)
            params = {key: value for key, value in params.items() if value is not None} or None
        prepared.prepare(method=method.upper(), url=url, headers=merged, files=None,
                         data=data if data is not None else [], params=params,
                         auth=auth, cookies=session.cookies, hooks=session.hooks, json=json_body)
        return session.send(prepared, stream=True, timeout=self.timeout,
                            verify=self._verify if self._verify is not None else True, cert=None,
                            proxies=self._proxies_for(url), allow_redirects=allow_redirects)

    def _answer(self, response: requests.Response, watch: deadlines.Deadline, method: str, url: str, *,
                stream: bool, carries_secret: bool, renewable: bool) -> requests.Response:
        """Read (capped) what needs reading of one answer; raise for the errors."""
        status = response.status_code
        try:
            if status >= 300 or not stream:
                limit = self.max_error_bytes if status >= 300 else self.max_body_bytes
                response._content = _read_capped(response, limit, truncate=status >= 300)
                response.close()
                watch.stop()
        except _BODY_ERRORS:
            watch.stop()
            if watch.expired:
                raise self._too_slow(method, url, watch.seconds, watch.why) from None
            raise
        if watch.expired:  # the socket shut at the deadline can look like headers or a body that just ended
            response.close()
            raise self._too_slow(method, url, watch.seconds, watch.why)
        if status in RETRY_STATUSES:
            raise _Retry(ArchiveResponseError(_describe(response), status, url=_safe(url)))
        if 300 <= status < 400 and carries_secret:
            target = _safe(response.headers.get("Location", "")) if response.headers.get("Location") else "elsewhere"
            raise ArchiveResponseError(f"{method} {_safe(url)} answered a redirect (HTTP {status}) to {target}; "
                                       "a request carrying credentials is never re-sent to another address")
        if renewable:
            raise _Renewed()
        if status >= 400:
            raise _error_for(response, method, url)
        if stream:
            _stop_on_close(response, watch)
        return response

    def _proxies_for(self, url: str) -> dict[str, str]:
        """The environment's proxies for an origin (``*_proxy`` and ``no_proxy``), looked up once per origin."""
        origin = _origin(url)
        found = self._proxies.get(origin)
        if found is None:
            found = self._proxies[origin] = requests.utils.get_environ_proxies(url)
        return found

    def _too_slow(self, method: str, url: str, seconds: float, why: str | None = None) -> ArchiveUnavailableError:
        if why is not None:  # the speed floor, not the deadline
            return ArchiveUnavailableError(f"{method} {_safe(url)}: {why} (lower `min_speed` of the session's "
                                           "transport for a very slow link)")
        return ArchiveUnavailableError(f"{method} {_safe(url)}: no complete answer within {seconds:g} s "
                                       "(the deadline of one exchange; raise `deadline` for a very slow link)")

    def _read_timeout(self) -> float | None:
        """The read timeout, the window of the speed floor (None: no floor)."""
        timeout = self.timeout[1] if isinstance(self.timeout, tuple) else self.timeout
        return float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None

    #: largest JSON answer accepted (a broken or hostile server could send gigabytes)
    max_json_bytes = 512 * 1024 * 1024
    #: largest binary resource read into memory (superpixel PNGs, masks, images without a cache)
    max_binary_bytes = 256 * 1024 * 1024
    #: largest answer of another kind read into memory
    max_body_bytes = 64 * 1024 * 1024
    #: how much of an error page is read (for its message)
    max_error_bytes = 64 * 1024

    def get_json(self, endpoint: str, params: Mapping[str, Any] | None = None,
                 expect: type | tuple[type, ...] | None = None, check_depth: bool = True, **kw: Any) -> Any:
        """GET and decode JSON, retrying a body that does not parse.

        Parameters
        ----------
        expect : type, optional
            ``dict`` or ``list``: a JSON value of another shape is an error
            (an HTML error page or a wrong answer from a proxy).
        check_depth : bool
            False: the caller checks the nesting of what it keeps itself
            (see :func:`isicarchive._json.loads`).
        """
        attempts = self.policy.body_retries + 1
        for attempt in range(1, attempts + 1):
            response = self.request("GET", endpoint, params=params, stream=True, **kw)
            announced = int(response.headers.get("Content-Length") or 0)
            if announced > self.max_json_bytes:
                response.close()
                raise ArchiveResponseError(f"GET {_safe(self.url(endpoint))}: the answer would be {announced} bytes, "
                                           f"more than the {self.max_json_bytes} accepted for JSON")
            try:
                body = self._read_body(response, self.max_json_bytes, "GET", endpoint)
                payload = _json.loads(body, check_depth=check_depth)
            except _BODY_ERRORS as exc:
                problem = f"cut short ({type(exc).__name__})"
            except ValueError as exc:
                kind = response.headers.get("Content-Type", "no content type")
                problem = str(exc) if isinstance(exc, _json.TooDeep) else f"not JSON ({kind})"
            else:
                if expect is None or isinstance(payload, expect):
                    return payload
                problem = f"a JSON {_names(type(payload))} where {_names(expect)} was expected"
            log.warning("GET %s: answer was %s (attempt %d of %d)", _safe(self.url(endpoint)), problem,
                        attempt, attempts)
            if attempt < attempts:
                time.sleep(self.policy.delay(attempt))
        raise ArchiveUnavailableError(f"GET {_safe(self.url(endpoint))}: the archive answered {problem}, "
                                      f"{attempts} times. Try again later.")

    def _read_body(self, response: requests.Response, limit: int, method: str, endpoint: str) -> bytes:
        """A streamed body, read whole up to ``limit`` bytes; a deadline that passed meanwhile raises."""
        watch = deadline_of(response)
        try:
            body = _read_capped(response, limit)
        except _BODY_ERRORS:
            if watch.expired:
                raise self._too_slow(method, self.url(endpoint), watch.seconds, watch.why) from None
            raise
        finally:
            response.close()
        if watch.expired:
            raise self._too_slow(method, self.url(endpoint), watch.seconds, watch.why)
        return body

    def get_bytes(self, endpoint: str, params: Mapping[str, Any] | None = None) -> tuple[bytes, str]:
        """GET a binary resource whole (up to :attr:`max_binary_bytes`); returns (bytes, content type).

        The length is checked against ``Content-Length``; a short body is retried.
        """
        attempts = self.policy.body_retries + 1
        for attempt in range(1, attempts + 1):
            response = self.request("GET", endpoint, params=params, stream=True)
            expected = response.headers.get("Content-Length")
            if expected is not None and expected.isdigit() and int(expected) > self.max_binary_bytes:
                response.close()
                raise ArchiveResponseError(f"GET {_safe(self.url(endpoint))}: the answer would be {expected} "
                                           f"bytes, more than the {self.max_binary_bytes} accepted")
            try:
                content = self._read_body(response, self.max_binary_bytes, "GET", endpoint)
            except _BODY_ERRORS:
                content = b""
                expected = expected or "-1"
            else:
                encoded = response.raw.tell() if response.headers.get("Content-Encoding") else len(content)
                if expected is None or not expected.isdigit() or int(expected) == encoded:
                    return content, response.headers.get("Content-Type", "")
            if attempt < attempts:
                time.sleep(self.policy.delay(attempt))
        raise ArchiveUnavailableError(f"GET {_safe(self.url(endpoint))}: the body arrived incomplete {attempts} times.")

    def stream(self, endpoint: str, *, headers: Mapping[str, str] | None = None,
               params: Mapping[str, Any] | None = None, deadline: float | None = None) -> requests.Response:
        """A streaming GET (caller reads ``iter_content`` and closes; closing ends its deadline)."""
        return self.request("GET", endpoint, params=params, headers=headers, stream=True, deadline=deadline)

    def close(self) -> None:
        if self._pid == os.getpid():  # a forked child's inherited pool is the parent's to close
            self._session.close()

    # -------------------------------------------------------------- logging
    def _log(self, method: str, url: str, params: Mapping[str, Any] | None, status: int | None,
             started: float, error: str | None = None) -> None:
        if not self.debug:
            return
        took = (time.monotonic() - started) * 1000
        query = "&".join(f"{k}={'[hidden]' if _SECRET_PARAM.search(str(k)) else v}" for k, v in (params or {}).items())
        target = _safe(url) + (f"?{query}" if query else "")
        log.info("%s %s -> %s (%.0f ms)", method, target, status if status is not None else error, took)


def _read_capped(response: requests.Response, limit: int, truncate: bool = False) -> bytes:
    """The body up to ``limit`` bytes: beyond it an error, or (``truncate``) the first ``limit`` bytes."""
    chunks = []
    size = 0
    for chunk in response.iter_content(min(limit, 1 << 20)):
        size += len(chunk)
        if size > limit:
            response.close()
            if truncate:
                chunks.append(chunk[: len(chunk) - (size - limit)])
                break
            raise ArchiveResponseError(f"the answer exceeded the {limit} bytes accepted")
        chunks.append(chunk)
    return b"".join(chunks)


class _Retry(Exception):
    """A transient status that urllib3's retries could not get past."""

    def __init__(self, error: ArchiveResponseError) -> None:
        self.error = error


class _Renewed(Exception):
    """A 401 for a token that has since been renewed: send the request again."""


class _RefusedRedirect(requests.exceptions.RequestException):
    """A redirect the client will not follow."""


def _redirect_problem(exc: Exception) -> str:
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return f"redirected more than {_ScopedSession.max_redirects} times (a redirect loop)"
    if isinstance(exc, _RefusedRedirect):
        return str(exc)
    return "a redirect or address the client cannot follow (only http and https are fetched)"


def _stop_on_close(response: requests.Response, watch: deadlines.Deadline) -> None:
    close = response.close

    def close_and_stop() -> None:
        try:
            close()
        finally:
            watch.stop()

    response.close = close_and_stop  # type: ignore[method-assign]
    response._isic_deadline = watch  # type: ignore[attr-defined]


def deadline_of(response: requests.Response) -> deadlines.Deadline:
    """The deadline a streamed response runs under (an unarmed one for other responses)."""
    return getattr(response, "_isic_deadline", None) or deadlines.Deadline(0.0)


def _retries_exhausted(exc: Exception) -> bool:
    return bool(exc.args) and isinstance(exc.args[0], MaxRetryError)


def _names(expect: type | tuple[type, ...]) -> str:
    kinds = expect if isinstance(expect, tuple) else (expect,)
    return " or ".join("an object" if k is dict else "an array" if k is list else f"a {k.__name__}" for k in kinds)


#: query parameters whose values are secrets (tokens, signatures, keys): never in a log line
_SECRET_PARAM = re.compile(r"(?i)token|sig|secret|passw|key|credential|auth|code|zsid|session")


def _safe(url: str) -> str:
    """A URL without credentials or query (pre-signed storage URLs carry tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _unavailable(method: str, url: str, error: Exception | None) -> str:
    """What went wrong with a request that failed for good: what happened, then what to do.

    Rate-limiting is named only when the archive said so (429, 503).
    """
    where = f"{method} {_safe(url)}"
    parts = urlsplit(url)
    host = parts.hostname or ""
    address = f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    reason = error.args[0].reason if error is not None and _retries_exhausted(error) else error
    if isinstance(reason, NameResolutionError):
        return (f"{where}: cannot resolve {host} (no such host name, or no network); check the spelling "
                "(the archive is api.isic-archive.com)")
    if isinstance(reason, NewConnectionError):
        cause = reason.__cause__ or reason.__context__
        if isinstance(cause, ConnectionRefusedError):
            return (f"{where}: connection refused by {address}: nothing listens there (is the archive or "
                    "`isicarchive serve` running, on that port?)")
        if isinstance(cause, OSError) and cause.strerror:
            return f"{where}: cannot connect to {address}: {cause.strerror} (no network?)"
        return f"{where}: cannot connect to {address} (no network?)"
    if isinstance(error, requests.exceptions.SSLError):
        return (f"{where}: the TLS handshake with {address} failed. If the server speaks plain http it must be a "
                "local archive: write http://127.0.0.1:PORT; else check the address, or pass verify= a CA bundle")
    if isinstance(error, requests.exceptions.ConnectTimeout) or isinstance(reason, urllib3_ConnectTimeout):
        return f"{where}: no connection to {address} within the connect timeout (a firewall, or no network?)"
    if isinstance(error, ArchiveResponseError) and error.status in (429, 503):
        return (f"{where} failed after retries: {error}. The archive is rate-limiting or overloaded; "
                "try again later or raise `retries`.")
    if isinstance(error, ArchiveResponseError):
        return f"{where} failed after retries: {error}. The archive has a problem; try again later."
    return (f"{where} failed after retries: {_safe_error(error)} (the connection broke or timed out); "
            "try again later or raise `retries`.")


def _safe_error(exc: Exception | None) -> str:
    if exc is None:
        return "no answer"
    if isinstance(exc, ArchiveResponseError):
        return str(exc)
    return type(exc).__name__


def _describe(response: requests.Response) -> str:
    message = _server_message(response)
    return f"HTTP {response.status_code}" + (f": {message}" if message else "")


def _server_message(response: requests.Response) -> str:
    try:
        payload = _json.loads(response.content)
    except ValueError:
        text = response.text.strip()
        return text[:200] if text and not text.lstrip().startswith("<") else ""
    if isinstance(payload, dict):
        for key in ("message", "detail", "error_description", "error"):
            if payload.get(key):
                detail = payload[key]
                return detail if isinstance(detail, str) else _json.dumps(detail).decode()
    return ""


def _error_for(response: requests.Response, method: str, url: str) -> IsicError:
    status = response.status_code
    message = _server_message(response).rstrip(".")
    where = f"{method} {_safe(url)}"
    text = f"{where} answered HTTP {status}" + (f": {message}" if message else "")
    address = _safe(url)
    if status == 401:
        return AuthenticationError(text + ". Log in (IsicApi(username)) or check your credentials.",
                                   status=status, url=address)
    if status == 403:
        return AuthenticationError(text + ". Your account may not see this object.", status=status, url=address)
    if status == 404:
        return NotFoundError(text, status=status, url=address)
    if status == 400:
        return QueryError(text, status=status, url=address)
    return ArchiveResponseError(text, status, url=address)


def iter_pages(fetch: Callable[[int, int], list], page_size: int, start: int = 0) -> Iterator[dict]:
    """Yield the records of an offset-paged listing until a short page arrives.

    Every item must be a record with an ``_id``; a page that brings no record
    not already seen (a server that ignores ``offset``, or repeats a page)
    ends the walk with :class:`ArchiveResponseError` instead of looping on.
    """
    offset = start
    seen: set[str] = set()
    while True:
        page = fetch(page_size, offset)
        ids = {checked_record(item, "_id") for item in page}
        if page and ids <= seen:
            raise ArchiveResponseError(f"the listing repeated records already received at offset {offset} "
                                       "(the server ignores the offset?); stopped instead of looping")
        seen |= ids
        yield from page
        if len(page) < page_size:
            return
        offset += len(page)


def record_id(record: dict) -> str:
    """The id of an image record: ``_id`` (v1, and v2 records once normalised) or ``isic_id`` (v2 as sent)."""
    return str(record.get("_id") or record.get("isic_id"))


def checked_record(item: Any, key: str) -> str:
    """The id (text or number) of a record entering from the archive; else :class:`ArchiveResponseError`."""
    if not isinstance(item, dict):
        raise ArchiveResponseError(f"the archive sent a JSON {type(item).__name__} where a record was expected")
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ArchiveResponseError(f"the archive sent a record without a usable {key!r}")
    return str(value)
