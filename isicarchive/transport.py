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
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from . import _json
from ._version import __version__
from .errors import (
    ArchiveUnavailableError,
    AuthenticationError,
    IsicError,
    NotFoundError,
    QueryError,
)

__all__ = ["ArchiveResponseError", "RetryPolicy", "Transport"]

log = logging.getLogger("isicarchive.http")

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


class ArchiveResponseError(IsicError):
    """An error answer from the archive that is not mapped to a narrower error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _ScopedSession(requests.Session):
    """A Session that drops our auth header on redirects to another origin."""

    auth_header: str = "Girder-Token"

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if _origin(prepared_request.url or "") != _origin(response.request.url or ""):
            prepared_request.headers.pop(self.auth_header, None)
            prepared_request.headers.pop("Authorization", None)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
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
        session = _ScopedSession()
        session.auth_header = auth_header
        session.headers["User-Agent"] = f"isicarchive/{__version__} (python-requests)"
        session.trust_env = True
        # Passed with every request: requests lets REQUESTS_CA_BUNDLE override a session's own setting.
        self._verify = verify if verify is not None else os.environ.get("ISICARCHIVE_CA_BUNDLE")
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
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=pool_size)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.session = session

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
        _renewed: bool = False,
    ) -> requests.Response:
        """Send one request with the retry policy; errors are mapped to :class:`IsicError`.

        A non-2xx answer that is not transient raises (404 → NotFoundError,
        401 → AuthenticationError, 400 → QueryError, others →
        ArchiveResponseError); transient ones that stay transient raise
        ArchiveUnavailableError.  A 401 to a request that carried an expired
        token is retried once with a token from :attr:`token_renewer`.
        ``authenticate=False`` sends no token (the OAuth endpoints need none).
        """
        url = self.url(endpoint)
        send_headers = dict(headers or {})
        if authenticate and _origin(url) == self._origin:  # storage hosts never see the token: no renewal
            self._renew_if_expiring()
            send_headers.update(self._auth_headers(url))
        attempts = self.policy.body_retries + 1
        last_error: Exception | None = None
        for attempt in range(1, attempts + 1):
            self.pause.wait()
            started = time.monotonic()
            try:
                response = self.session.request(
                    method, url, params=params, headers=send_headers, stream=stream, auth=auth,
                    json=json_body, data=data, timeout=self.timeout, verify=self._verify,
                )
            except requests.exceptions.RetryError as exc:
                last_error = exc
                break
            except _BODY_ERRORS as exc:
                last_error = exc
                if _retries_exhausted(exc):  # urllib3 already retried this connection failure
                    break
                # a body cut short (reset, truncation, timeout mid-body) lands here
                self._log(method, url, params, None, started, f"{type(exc).__name__}")
                if attempt < attempts:
                    time.sleep(self.policy.delay(attempt))
                continue
            finally:
                with self._count_lock:
                    self.request_count += 1
            self._log(method, url, params, response.status_code, started)
            if response.status_code in RETRY_STATUSES:
                last_error = ArchiveResponseError(_describe(response), response.status_code)
                break
            if response.status_code == 401 and authenticate and not _renewed and self._renew(send_headers):
                return self.request(method, endpoint, params=params, headers=headers, stream=stream, auth=auth,
                                    json_body=json_body, data=data, _renewed=True)
            if response.status_code >= 400:
                raise _error_for(response, method, url)
            return response
        raise ArchiveUnavailableError(
            f"{method} {_safe(url)} failed after retries: {_safe_error(last_error)}. "
            "The archive may be down or rate-limiting; try again later or raise `retries`."
        )

    #: largest JSON answer accepted (a broken or hostile server could send gigabytes)
    max_json_bytes = 512 * 1024 * 1024

    def get_json(self, endpoint: str, params: Mapping[str, Any] | None = None,
                 expect: type | tuple[type, ...] | None = None, **kw: Any) -> Any:
        """GET and decode JSON, retrying a body that does not parse.

        Parameters
        ----------
        expect : type, optional
            ``dict`` or ``list``: a JSON value of another shape is an error
            (an HTML error page or a wrong answer from a proxy).
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
                body = _read_capped(response, self.max_json_bytes)
                payload = _json.loads(body)
            except _BODY_ERRORS as exc:
                problem = f"cut short ({type(exc).__name__})"
            except ValueError:
                problem = f"not JSON ({response.headers.get('Content-Type', 'no content type')})"
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

    def get_bytes(self, endpoint: str, params: Mapping[str, Any] | None = None) -> tuple[bytes, str]:
        """GET a binary resource whole; returns (bytes, content type).

        The length is checked against ``Content-Length``; a short body is retried.
        """
        attempts = self.policy.body_retries + 1
        for attempt in range(1, attempts + 1):
            response = self.request("GET", endpoint, params=params)
            expected = response.headers.get("Content-Length")
            content = response.content
            if expected is None or int(expected) == len(content):
                return content, response.headers.get("Content-Type", "")
            if attempt < attempts:
                time.sleep(self.policy.delay(attempt))
        raise ArchiveUnavailableError(f"GET {_safe(self.url(endpoint))}: the body arrived incomplete {attempts} times.")

    def stream(self, endpoint: str, *, headers: Mapping[str, str] | None = None,
               params: Mapping[str, Any] | None = None) -> requests.Response:
        """A streaming GET (caller reads ``iter_content`` and closes)."""
        return self.request("GET", endpoint, params=params, headers=headers, stream=True)

    def close(self) -> None:
        self.session.close()

    # -------------------------------------------------------------- logging
    def _log(self, method: str, url: str, params: Mapping[str, Any] | None, status: int | None,
             started: float, error: str | None = None) -> None:
        if not self.debug:
            return
        took = (time.monotonic() - started) * 1000
        query = "&".join(f"{k}={v}" for k, v in (params or {}).items())
        target = _safe(url) + (f"?{query}" if query else "")
        log.info("%s %s -> %s (%.0f ms)", method, target, status if status is not None else error, took)


def _read_capped(response: requests.Response, limit: int) -> bytes:
    chunks = []
    size = 0
    for chunk in response.iter_content(1 << 20):
        size += len(chunk)
        if size > limit:
            response.close()
            raise ArchiveResponseError(f"the answer exceeded the {limit} bytes accepted for JSON")
        chunks.append(chunk)
    return b"".join(chunks)


def _retries_exhausted(exc: Exception) -> bool:
    return bool(exc.args) and isinstance(exc.args[0], MaxRetryError)


def _names(expect: type | tuple[type, ...]) -> str:
    kinds = expect if isinstance(expect, tuple) else (expect,)
    return " or ".join("an object" if k is dict else "an array" if k is list else f"a {k.__name__}" for k in kinds)


def _safe(url: str) -> str:
    """A URL without credentials or query (pre-signed storage URLs carry tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


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
    if status == 401:
        return AuthenticationError(text + ". Log in (IsicApi(username)) or check your credentials.")
    if status == 403:
        return AuthenticationError(text + ". Your account may not see this object.")
    if status == 404:
        return NotFoundError(text)
    if status == 400:
        return QueryError(text)
    return ArchiveResponseError(text, status)


def iter_pages(fetch: Callable[[int, int], list], page_size: int, start: int = 0) -> Iterator[Any]:
    """Yield items of an offset-paged listing until a short page arrives."""
    offset = start
    while True:
        page = fetch(page_size, offset)
        yield from page
        if len(page) < page_size:
            return
        offset += len(page)
