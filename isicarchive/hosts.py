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
from urllib.parse import urlsplit

__all__ = ["OFFICIAL_HOSTS", "is_loopback", "serves_only_v1", "split_api_address", "with_scheme"]

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
