"""Where a password or token comes from, first hit wins.

1. the ``password`` argument,
2. the system keyring (service ``isicarchive:<scheme>://<host>:<port>``, the archive's origin;
   entry = user name),
3. ``~/.netrc`` (or ``$NETRC``) for the host,
4. an interactive prompt with hidden input — only when a person can answer
   (a console with a TTY, or a Jupyter kernel).

With nothing found and nobody to ask, :class:`AuthenticationError` is raised
at once: a script in CI never hangs waiting for stdin.  Nothing here logs,
prints or stores a secret except :func:`store_password`, which writes to the
keyring on request.
"""

from __future__ import annotations

import getpass
import logging
import netrc
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .errors import AuthenticationError, KeyringUnavailableError

if TYPE_CHECKING:
    from .oauth import OAuthToken

__all__ = [
    "delete_password",
    "has_password",
    "interactive",
    "keyring_service",
    "load_token",
    "resolve_password",
    "store_password",
    "store_token",
]

log = logging.getLogger("isicarchive.auth")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def keyring_service(base_url: str) -> str:
    """The keyring service name for an archive: ``isicarchive:<scheme>://<host>:<port>``, its origin.

    A password kept for one service must never go to another on the same host (another port, or
    plain http): the origin, not the host name, says whose it is.
    """
    parts = urlsplit(base_url)
    scheme = (parts.scheme or "https").lower()
    host = (parts.hostname or base_url).lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = 0
    return f"isicarchive:{scheme}://{host}:{port}"


def _legacy_service(base_url: str) -> str | None:
    """The host-only service name earlier versions used (``isicarchive:<host>``), where reading it is
    safe: only for an https archive on the default port, where every real archive is.  An entry kept
    for ``127.0.0.1`` may belong to any service on that machine and is never read for another port."""
    parts = urlsplit(base_url)
    try:
        default = parts.scheme == "https" and parts.port in (None, 443)
    except ValueError:
        return None
    return f"isicarchive:{parts.hostname}" if default and parts.hostname else None


def _from_keyring_or_legacy(base_url: str, entry: str) -> str | None:
    """An entry under the archive's origin; else under the host-only name of earlier versions, where
    safe (:func:`_legacy_service`), then copied to the origin's service."""
    service = keyring_service(base_url)
    found = _from_keyring(service, entry)
    legacy = None if found else _legacy_service(base_url)
    if legacy is not None:
        found = _from_keyring(legacy, entry)
        if found:
            try:
                _to_keyring(service, entry, found)
            except KeyringUnavailableError:
                pass  # read-only keyring: read from the old place next time too
    return found


def interactive() -> bool:
    """True when a person can answer a prompt (TTY console or Jupyter)."""
    if os.environ.get("CI") or os.environ.get("ISICARCHIVE_NO_PROMPT"):
        return False
    if _in_jupyter():
        return True
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _in_jupyter() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()  # type: ignore[attr-defined]
    except Exception:
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _from_keyring(service: str, username: str) -> str | None:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:  # pragma: no cover
        return None
    try:
        return keyring.get_password(service, username)
    except (KeyringError, RuntimeError, OSError) as exc:
        log.debug("keyring unavailable: %s", type(exc).__name__)
        return None


def _from_netrc(base_url: str, username: str) -> str | None:
    host = urlsplit(base_url).hostname
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    if not host or not os.path.isfile(path):
        return None
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        log.warning("could not read %s: %s", path, type(exc).__name__)
        return None
    if entry is None:
        return None
    login, _account, password = entry
    if login and login != username:
        return None
    return password


def resolve_password(
    base_url: str,
    username: str,
    password: str | None = None,
    prompt: Callable[[str], str] | None = None,
) -> tuple[str, str]:
    """Find the password for ``username``; returns ``(password, source)``.

    ``source`` is one of ``argument``, ``keyring``, ``netrc``, ``prompt``
    (for messages; never the secret).

    Raises
    ------
    AuthenticationError
        When nothing was found and nobody can be asked.
    """
    if password:
        return password, "argument"
    service = keyring_service(base_url)
    found = _from_keyring_or_legacy(base_url, username)
    if found:
        return found, "keyring"
    found = _from_netrc(base_url, username)
    if found:
        return found, "netrc"
    if prompt is not None or interactive():
        ask = prompt or getpass.getpass
        answer = ask(f"Password for {username} at {urlsplit(base_url).hostname}: ")
        if answer:
            return answer, "prompt"
    raise AuthenticationError(
        f"No password for user {username!r} at {urlsplit(base_url).hostname}: none was given, none is in the "
        f"keyring (service {service!r}) or ~/.netrc, and no one can be asked (not interactive). Pass "
        "password=..., run `isicarchive login`, or store it with isicarchive.credentials.store_password()."
    )


def has_password(base_url: str, username: str) -> bool:
    """True when the keyring or ``~/.netrc`` holds a password for ``username`` (no prompt)."""
    return bool(_from_keyring_or_legacy(base_url, username) or _from_netrc(base_url, username))


def _to_keyring(service: str, entry: str, secret: str) -> None:
    import keyring
    from keyring.errors import KeyringError

    try:
        keyring.set_password(service, entry, secret)
    except (KeyringError, RuntimeError, OSError) as exc:
        raise KeyringUnavailableError(
            f"the system keyring cannot store it ({type(exc).__name__}): install or unlock a keyring backend "
            "(see https://pypi.org/project/keyring/), or pass the password or token to each session") from None


def store_password(base_url: str, username: str, password: str) -> None:
    """Save a password (or token) in the system keyring for later sessions.

    Raises
    ------
    KeyringUnavailableError
        When no keyring backend can store it (a headless machine without one).
    """
    _to_keyring(keyring_service(base_url), username, password)


def _token_entry(username: str) -> str:
    return f"{username}:token"


def store_token(base_url: str, username: str, token: str | OAuthToken) -> None:
    """Save a v2 token in the keyring under ``<username>:token``.

    An :class:`~isicarchive.oauth.OAuthToken` is kept with its refresh token
    and expiry (as JSON in the keyring entry), so later sessions renew it.
    """
    from .oauth import OAuthToken

    entry = token if isinstance(token, OAuthToken) else OAuthToken(token)
    _to_keyring(keyring_service(base_url), _token_entry(username), entry.to_json())


def load_token(base_url: str, username: str) -> OAuthToken | None:
    """The token stored for ``username``, if any."""
    from .oauth import OAuthToken

    text = _from_keyring_or_legacy(base_url, _token_entry(username))
    return OAuthToken.from_json(text) if text else None


def delete_password(base_url: str, username: str) -> bool:
    """Remove a stored password and token; True if there was one."""
    import keyring
    from keyring.errors import PasswordDeleteError

    removed = False
    services = [keyring_service(base_url), _legacy_service(base_url)]
    for service in filter(None, services):
        for entry in (username, _token_entry(username)):
            try:
                keyring.delete_password(service, entry)
            except PasswordDeleteError:
                continue
            removed = True
    return removed
