"""OAuth 2 sign-in for the current API (v2), the way the official ``isic`` CLI does it.

The archive signs people in on its web page: the authorization-code flow
with PKCE (RFC 7636, ``S256``) and the out-of-band redirect
``urn:ietf:wg:oauth:2.0:oob``.  The client makes a random verifier, sends
its hash with the person to ``<host>/oauth/authorize/``; after signing in the
page shows a code, which the person pastes back; the client trades code and
verifier at ``<host>/oauth/token/`` for an access token (Bearer) and a
refresh token.  Expired access tokens are refreshed with
``grant_type=refresh_token``; ``<host>/oauth/revoke_token/`` ends a login.

Why not authlib or requests-oauthlib: both were weighed.  Each brings its
own ``requests.Session`` for the token calls, with requests' defaults: it
follows a 307/308 and re-sends the form (password, refresh token) to the
new address, keeps the server's cookies, and has none of the transport's
deadline, size caps and retry policy; authlib also pulls in
``cryptography``.  What the archive needs is three form POSTs and a PKCE
pair (about a hundred lines here), and they go through
:class:`~isicarchive.transport.Transport`, which never follows a redirect
of a request carrying credentials, keeps no cookies, and bounds every
exchange.  Closing those holes around either library would take more code
than this module.

The client id is the official CLI's public one (a public client has no
secret).  Tokens are kept by :mod:`isicarchive.credentials` in the system
keyring, never in a file of ours, and never appear in a ``repr`` or a log.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from . import _json
from .errors import AuthenticationError, IsicError, NotFoundError, QueryError
from .transport import TOKEN_RENEWAL_MARGIN

if TYPE_CHECKING:
    from .transport import Transport

__all__ = [
    "CLIENT_ID",
    "OOB_REDIRECT",
    "AuthorizationRequest",
    "OAuthClient",
    "OAuthToken",
    "pkce_pair",
    "sign_in",
]

log = logging.getLogger("isicarchive.auth")

#: the official CLI's public OAuth client id
CLIENT_ID = "RpCzc4hFjv5gOJdM2DM2nBdokOviOh5ne63Tpn7Q"
OOB_REDIRECT = "urn:ietf:wg:oauth:2.0:oob"


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE ``(verifier, S256 challenge)``.

    The verifier is 128 characters of the unreserved alphabet (RFC 7636
    allows 43–128).
    """
    verifier = secrets.token_urlsafe(96)[:128]
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


@dataclass(repr=False)
class OAuthToken:
    """An access token with what is needed to renew it.

    Attributes
    ----------
    access_token : str
        The bearer token sent as ``Authorization: Bearer …``.
    refresh_token : str or None
        Trades for a new access token once this one expires.
    expires_at : float or None
        Unix time of expiry; None when the server did not say.
    """

    access_token: str
    token_type: str = "Bearer"
    refresh_token: str | None = None
    expires_at: float | None = None
    scope: str = ""

    @classmethod
    def from_response(cls, payload: Any, now: float | None = None) -> OAuthToken:
        if not isinstance(payload, dict) or not isinstance(payload.get("access_token"), str):
            raise AuthenticationError("the archive's token answer holds no access token")
        expires_in = payload.get("expires_in")
        expires_at = (now or time.time()) + float(expires_in) if isinstance(expires_in, (int, float)) else None
        return cls(payload["access_token"], str(payload.get("token_type") or "Bearer"),
                   payload.get("refresh_token") or None, expires_at, str(payload.get("scope") or ""))

    @classmethod
    def from_json(cls, text: str) -> OAuthToken:
        """Read what :meth:`to_json` wrote; a bare token string (older entries) is an access token."""
        stripped = text.strip()
        if stripped.startswith("{"):
            try:
                payload = _json.loads(stripped)
                return cls(str(payload["access_token"]), str(payload.get("token_type") or "Bearer"),
                           payload.get("refresh_token") or None, payload.get("expires_at"),
                           str(payload.get("scope") or ""))
            except (ValueError, KeyError, TypeError):
                raise AuthenticationError("the stored token is unreadable; log in again") from None
        return cls(stripped)

    def to_json(self) -> str:
        return _json.dumps({"access_token": self.access_token, "token_type": self.token_type,
                            "refresh_token": self.refresh_token, "expires_at": self.expires_at,
                            "scope": self.scope}).decode("utf-8")

    def expired(self, margin: float = TOKEN_RENEWAL_MARGIN, now: float | None = None) -> bool:
        """True once the token is (nearly) expired; unknown expiry counts as valid."""
        return self.expires_at is not None and (now or time.time()) >= self.expires_at - margin

    def __repr__(self) -> str:
        if self.expires_at is None:
            life = "expiry unknown"
        else:
            left = self.expires_at - time.time()
            life = f"expires in {int(left // 60)} min" if left > 0 else "expired"
        return f"<OAuthToken {self.token_type}, {life}{', refreshable' if self.refresh_token else ''}>"


@dataclass(repr=False)
class AuthorizationRequest:
    """One started sign-in: the page to visit and the secret that finishes it."""

    url: str
    state: str
    verifier: str = field(repr=False)

    def __repr__(self) -> str:
        return f"<AuthorizationRequest {self.url.split('?', 1)[0]}>"


class OAuthClient:
    """The archive's OAuth endpoints, over the session's transport.

    Parameters
    ----------
    transport : Transport
        The session's transport (its retries and TLS settings apply).
    oauth_url : str
        ``<host>/oauth``.
    client_id : str
        The public client id; the official CLI's by default.
    """

    def __init__(self, transport: Transport, oauth_url: str, client_id: str = CLIENT_ID) -> None:
        self.transport = transport
        self.oauth_url = oauth_url.rstrip("/")
        self.client_id = client_id

    def start(self, redirect_uri: str = OOB_REDIRECT) -> AuthorizationRequest:
        """Begin a sign-in: the URL the person opens, with a fresh PKCE challenge."""
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        query = urlencode({"response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
                           "code_challenge": challenge, "code_challenge_method": "S256", "state": state})
        return AuthorizationRequest(f"{self.oauth_url}/authorize/?{query}", state, verifier)

    def finish(self, request: AuthorizationRequest, code: str, redirect_uri: str = OOB_REDIRECT) -> OAuthToken:
        """Trade the code the sign-in page showed for tokens."""
        code = (code or "").strip()
        if not code:
            raise AuthenticationError("no code was entered; sign in again")
        return self._token({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                            "code_verifier": request.verifier, "client_id": self.client_id})

    def refresh(self, token: OAuthToken) -> OAuthToken:
        """A new access token for an expired one (the refresh token may rotate)."""
        if not token.refresh_token:
            raise AuthenticationError("the access token has expired and cannot be renewed; log in again")
        return self._token({"grant_type": "refresh_token", "refresh_token": token.refresh_token,
                            "client_id": self.client_id})

    def password_grant(self, username: str, password: str) -> OAuthToken:
        """Tokens for a login and password, where the server offers that grant (the local archive)."""
        return self._token({"grant_type": "password", "username": username, "password": password,
                            "client_id": self.client_id})

    def revoke(self, token: OAuthToken) -> None:
        """Ask the archive to forget the tokens (best effort: a failure is logged, not raised)."""
        for value in (token.access_token, token.refresh_token):
            if not value:
                continue
            try:
                self.transport.request("POST", f"{self.oauth_url}/revoke_token/", authenticate=False,
                                       data={"token": value, "client_id": self.client_id})
            except IsicError as exc:
                log.warning("could not revoke a token: %s", type(exc).__name__)

    def _token(self, form: dict[str, str]) -> OAuthToken:
        try:
            response = self.transport.request("POST", f"{self.oauth_url}/token/", data=form, authenticate=False)
        except (AuthenticationError, QueryError, NotFoundError) as exc:
            raise AuthenticationError(f"the archive refused the sign-in: {str(exc).split(': ', 1)[-1]}") from None
        try:
            payload = _json.loads(response.content)
        except ValueError:
            raise AuthenticationError("the archive's token answer is not JSON; try signing in again") from None
        return OAuthToken.from_response(payload)


def sign_in(client: OAuthClient, *, ask: Callable[[str], str] | None = None,
            say: Callable[[str], None] | None = None, open_browser: bool | None = None) -> OAuthToken:
    """Run the sign-in with a person: show (or open) the page, read back the code.

    Parameters
    ----------
    ask, say
        How to ask for the code and how to show the address (``input`` and
        ``print`` by default; a notebook or GUI may pass its own).
    open_browser
        Open the page in a web browser; by default only where there is a
        display (as the official CLI decides).
    """
    ask = ask or input
    say = say or print
    request = client.start()
    if open_browser is None:
        open_browser = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or os.name == "nt"
    say("Sign in to the ISIC Archive at this address, then paste the code it shows:")
    say(request.url)
    if open_browser:
        try:
            webbrowser.open(request.url)
        except webbrowser.Error:
            pass
    try:
        code = ask("Code: ")
    except EOFError:
        raise AuthenticationError("no code was entered (no input available)") from None
    return client.finish(request, code)
