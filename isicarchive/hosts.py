"""Which archive a session talks to, and over which API.

The rules, in the order they apply:

* a pasted API address (``http://127.0.0.1:8000/api/v2``, as ``isicarchive
  serve`` prints it) is split into its host and its API path, which then
  names the version;
* a host written without a scheme is ``http://`` when it is the loopback
  (a local archive) and ``https://`` otherwise;
* the version is ``api_version`` when given, else the one the API path
  names, else today's API (v2) — unless the host serves only the legacy v1
  API.  That is found out with one small request: a host that answers 404
  to ``/api/v2/images/`` has no v2 API.  The archive's own hosts are not
  asked (they serve v2), and a host that cannot be reached is taken to be
  v2 (the first real request then says what went wrong).
"""

from __future__ import annotations

import ipaddress
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import IsicError

__all__ = ["DEFAULTS", "OFFICIAL_HOSTS", "disk_location", "is_loopback", "is_snapshot_url", "normalise_host",
           "serves_only_v1", "split_api_address", "version_of", "with_scheme"]

#: API version → (default host, default API path)
DEFAULTS = {1: ("https://isic-archive.com", "/api/v1"), 2: ("https://api.isic-archive.com", "/api/v2")}
#: the archive's own hosts: the legacy v1 service there is retired, so they are v2 without asking
OFFICIAL_HOSTS = frozenset({"isic-archive.com", "www.isic-archive.com", "api.isic-archive.com"})

_API_PATH = re.compile(r"^(?P<host>.*?)(?P<api>/api/v[12])/*$", re.IGNORECASE)


def is_loopback(host: str) -> bool:
    """Whether a host name is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def with_scheme(hostname: str) -> str:
    """``hostname`` with a scheme: ``http://`` for the loopback, ``https://`` for any other host.

    A local archive (``isicarchive serve``) speaks plain http on 127.0.0.1; every other host
    gets TLS, and plain http there is refused later with a message saying what to write.
    """
    if "://" in hostname:
        return hostname
    host = urlsplit("//" + hostname).hostname or ""
    return ("http://" if is_loopback(host) else "https://") + hostname


def split_api_address(hostname: str | None, api_uri: str | None) -> tuple[str | None, str | None]:
    """A pasted API address (``…/api/v1``, ``…/api/v2``) as (host, API path); anything else unchanged.

    An ``api_uri`` given as well wins over the path of the address.
    """
    if not isinstance(hostname, str) or hostname.strip().lower().startswith("file:"):
        return hostname, api_uri
    match = _API_PATH.match(hostname.strip())
    if match is None:
        return hostname, api_uri
    return match.group("host"), api_uri or match.group("api").lower()


_known: dict[tuple[str, str], bool] = {}
_known_lock = threading.Lock()


def serves_only_v1(hostname: str, verify: bool | str | None = None, timeout: float = 5.0) -> bool:
    """Whether ``hostname`` (with scheme) answers 404 where the v2 API lists images.

    One GET of a single image record, asked once per host and process.
    Anything but a clear 404 (an answer, a refusal, no connection) counts as
    v2: the default stays today's API and the first real request reports a
    host that cannot be reached.
    """
    host = urlsplit(hostname).hostname or ""
    if host.lower() in OFFICIAL_HOSTS:
        return False
    key = (hostname, str(verify))
    with _known_lock:
        if key in _known:
            return _known[key]
    from .errors import IsicError, NotFoundError
    from .transport import RetryPolicy, Transport

    probe = Transport(hostname + "/api/v2", timeout=(min(timeout, 2.0), timeout),
                      policy=RetryPolicy(retries=0, body_retries=0), pool_size=1, verify=verify,
                      deadline=timeout)
    try:
        probe.request("GET", "images/", params={"limit": 1})
        only_v1 = False
    except NotFoundError:
        only_v1 = True
    except IsicError:
        return False  # unknown: not remembered, the next session asks again
    finally:
        probe.close()
    with _known_lock:
        _known[key] = only_v1
    return only_v1


def is_snapshot_url(location: Any) -> bool:
    """Whether a location is an http(s) URL naming a zip (the archive's snapshot read over HTTP,
    :mod:`isicarchive.disk.snapshot`)."""
    return isinstance(location, str) and location.lower().startswith(("http://", "https://")) and \
        urlsplit(location).path.lower().endswith(".zip")


def disk_location(hostname: str | None) -> Path | str | None:
    """The folder or zip a ``file://`` host names, the URL of an http(s) host naming a snapshot zip
    (isicarchive.disk.snapshot), or None for an archive's API."""
    if isinstance(hostname, str) and is_snapshot_url(hostname.strip()):
        return hostname.strip()
    if not isinstance(hostname, str) or not hostname.strip().lower().startswith("file:"):
        return None
    location = unquote(urlsplit(hostname.strip()).path)
    if not location:
        raise IsicError("a file:// host names a folder or zip: file:///path/to/archive")
    return Path(location).expanduser().resolve()


def normalise_host(hostname: str) -> str:
    """``hostname`` checked and written one way: ``scheme://host[:port][/path]``, or a file:// URI."""
    hostname = hostname.strip().rstrip("/")
    if not hostname:
        raise IsicError("hostname must not be empty")
    location = disk_location(hostname)
    if isinstance(location, Path):
        return location.as_uri()
    parts = urlsplit(with_scheme(hostname))
    if parts.username is not None or parts.password is not None:
        # credentials in the address would show in reprs, the cache marker and error messages
        raise IsicError(f"the hostname must not carry a user name or password ({parts.scheme}://…@"
                        f"{parts.hostname}); pass them as IsicApi(username, password) or use the keyring")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise IsicError(f"hostname {parts.scheme}://{parts.hostname or ''} is not an http(s) address; write "
                        "https://host (or http://127.0.0.1:PORT for a local archive)")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise IsicError(f"refusing plain http:// for {parts.hostname}: credentials and tokens would travel "
                        f"unencrypted. Write https://{parts.netloc} (http is allowed only for a local archive on "
                        "127.0.0.1).")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def version_of(api_uri: str | None, api_version: int | None, hostname: str | None = None,
               verify: bool | str | None = None) -> int:
    """Which API a session speaks.

    ``api_version`` when given; else the one ``api_uri`` names; else today's
    (v2), unless the host serves only the legacy v1 API (one request finds
    out: :func:`serves_only_v1`).
    """
    if api_version is not None:
        if api_version not in DEFAULTS:
            raise IsicError(f"api_version must be 1 or 2, not {api_version!r}")
        return api_version
    if api_uri:
        return 2 if "v2" in api_uri else 1
    if hostname is None or disk_location(hostname) is not None:
        return 2
    return 1 if serves_only_v1(normalise_host(hostname), verify) else 2
