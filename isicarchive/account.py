"""Who a session is: logging in, signing in, tokens kept in the keyring.

An :class:`Account` belongs to one :class:`~isicarchive.IsicApi`.  It talks
to the backend's login and token routes, keeps passwords and tokens in the
keyring through :mod:`isicarchive.credentials`, and names the identity the
session's cache layer follows.  Every change of identity is reported to the
session (``on_change``), which then drops what it held for the previous one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import credentials as _credentials
from .errors import AuthenticationError, IsicError, KeyringUnavailableError
from .oauth import OAuthToken

if TYPE_CHECKING:
    from .backends.base import Backend
    from .transport import Transport

__all__ = ["Account"]

log = logging.getLogger("isicarchive")


class Account:
    """The signed-in (or anonymous) identity of one session.

    Parameters
    ----------
    base_url : str
        The archive's API address: passwords and tokens are kept per address.
    http : Transport
        The session's transport, which carries the token to this origin only.
    backend : Backend
        The backend whose login and token routes are used (an archive on
        disk's refuses them all with a clear error).
    on_change : callable
        Called after every change of identity (login, sign-in, logout).
    """

    def __init__(self, base_url: str, http: Transport, backend: Backend, on_change: Callable[[], None]) -> None:
        self.base_url = base_url
        self._http = http
        self._backend = backend
        self._on_change = on_change
        self.username: str | None = None
        self.user: dict | None = None
        self._token_label: str | None = None  # keyring entry a renewed v2 token is written back to
        backend.on_token_renewed = self._keep_renewed_token
        backend.load_stored_token = self._stored_token

    def __repr__(self) -> str:
        return f"Account({self.username!r})" if self.username else "Account(anonymous)"

    # ------------------------------------------------------------ identity
    def cache_identity(self) -> str | None:
        """Whose data the session caches: the account the archive names, never a mere label.

        Two sessions of different people must not share a cache layer, even
        when both came in with a bare token (whose label is just ``token``).
        """
        if not self._http.authenticated:
            return None
        account = (self.user or {}).get("_id") or (self.user or {}).get("id")
        if account is not None:
            return f"account:{account}"
        if self.username and self.username != "token":
            return self.username
        token = self._http._token or ""
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]

    def archive_login(self) -> str | None:
        """The login the archive confirmed (v1 ``user/me``), None when it named none."""
        login = self.user.get("login") if isinstance(self.user, dict) else None
        return login if isinstance(login, str) else None

    @property
    def oauth_token(self) -> OAuthToken | None:
        """The current v2 OAuth token (its ``repr`` shows no secret), or None."""
        return self._backend.oauth_token

    # ------------------------------------------------------------- sign-in
    def authenticate(self, username: str | None, password: str | None, token: str | OAuthToken | None,
                     store_password: bool) -> None:
        """A given token; else (v2) the token stored for ``username``; else a password or the sign-in page."""
        if token is not None:
            self._use_token(token, username)
            return
        if username is None:
            return
        if self._backend.token_sign_in and password is None:
            stored = _credentials.load_token(self.base_url, username)  # from `isicarchive --api v2 login`
            if stored is not None:
                try:
                    self._use_token(stored, username)
                    return
                except AuthenticationError as exc:  # revoked or expired for good: the person signs in again
                    log.warning("the stored token of %s no longer works (%s)", username, str(exc).split(": ")[-1])
                    self._sign_in_or_explain(username)
                    return
            if not _credentials.has_password(self.base_url, username):
                self._sign_in_or_explain(username)
                return
        self.login(username, password, store_password=store_password)

    def login(self, username: str, password: str | None = None, *, store_password: bool = False) -> None:
        """Log in with a password resolved as :mod:`isicarchive.credentials` describes."""
        secret, source = _credentials.resolve_password(self.base_url, username, password)
        token, user = self._backend.login(username, secret)
        self._http.set_token(token)
        self.username = username
        self.user = user
        self._on_change()
        if store_password and source != "keyring":
            try:
                _credentials.store_password(self.base_url, username, secret)
            except KeyringUnavailableError as exc:  # logged in all the same
                log.warning("logged in, but the password was not stored: %s", exc)
        log.info("logged in as %s (password from %s)", username, source)

    def sign_in(self, username: str | None = None, *, store: bool = True, ask: Callable[[str], str] | None = None,
                say: Callable[[str], None] | None = None, open_browser: bool | None = None) -> None:
        """Sign in through the archive's web page; see :meth:`isicarchive.IsicApi.sign_in`."""
        self._backend.sign_in(ask=ask, say=say, open_browser=open_browser)
        self.user = self._safe_me()
        self.username = username or (self.user or {}).get("email") or (self.user or {}).get("username") or "token"
        self._on_change()
        if store and self._backend.oauth_token is not None:
            try:
                _credentials.store_token(self.base_url, self.username, self._backend.oauth_token)
                self._token_label = self.username
            except KeyringUnavailableError as exc:  # signed in all the same: the token lasts this session
                log.warning("signed in, but the token was not kept: %s", exc)
        log.info("signed in as %s", self.username)

    def revoke(self, token: OAuthToken) -> None:
        """Ask the archive to forget a v2 token and its refresh token (best effort, logged on failure)."""
        self._backend.revoke(token)

    def logout(self) -> None:
        """End the login (the server forgets the token)."""
        if self._http.authenticated:
            try:
                self._backend.logout()
            finally:
                self._http.set_token(None)
        self.username = None
        self.user = None
        self._on_change()

    # ------------------------------------------------------------- helpers
    def _sign_in_or_explain(self, username: str) -> None:
        if not _credentials.interactive():
            raise AuthenticationError(
                f"no working token or password for {username!r} at {urlsplit(self.base_url).hostname}, and no one "
                "can be asked (not interactive). Sign in once with `isicarchive --api v2 login --user "
                f"{username}` (the token is kept in the keyring), or pass token=...")
        self.sign_in(username)

    def _use_token(self, token: str | OAuthToken, username: str | None) -> None:
        self._token_label = username  # where a renewed token is written back (backends whose tokens renew)
        self._backend.use_token(token)
        self.username = username or "token"
        self.user = self._safe_me()
        self._on_change()

    def _stored_token(self) -> OAuthToken | None:
        if not self._token_label:
            return None
        try:
            return _credentials.load_token(self.base_url, self._token_label)
        except Exception as exc:  # an unreadable keyring entry is no token
            log.warning("could not read the stored token: %s", type(exc).__name__)
            return None

    def _keep_renewed_token(self, token: OAuthToken) -> None:
        if self._token_label:
            try:
                _credentials.store_token(self.base_url, self._token_label, token)
            except Exception as exc:  # a locked keyring must not end the session
                log.warning("could not store the renewed token: %s", type(exc).__name__)

    def _safe_me(self) -> dict | None:
        try:
            return self._backend.me()
        except AuthenticationError as exc:
            raise AuthenticationError(f"the token was refused by the archive: {str(exc).split(': ', 1)[-1]}") from None
        except IsicError:
            return None
