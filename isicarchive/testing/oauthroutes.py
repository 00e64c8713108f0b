"""The local archive's OAuth 2 provider (``/oauth``), as the real archive's login works.

* ``GET /oauth/authorize/`` — the sign-in page of the authorization-code flow
  with PKCE (``response_type=code``, ``client_id``, ``redirect_uri``,
  ``code_challenge``, ``code_challenge_method=S256``, optional ``state``).
* ``POST /oauth/authorize/`` — the page's form (login, password and the
  request's fields).  For the out-of-band redirect
  ``urn:ietf:wg:oauth:2.0:oob``, which the official CLI uses, the answer is a
  page showing the code (in ``<code id="authorization-code">``); for any
  other redirect a 302 to it with ``code`` and ``state``.
* ``POST /oauth/token/`` — grants ``authorization_code`` (the verifier must
  match the challenge; a code works once, for ten minutes), ``refresh_token``
  and ``password`` (a convenience of the local archive for scripts; the real
  archive has no password grant).
* ``POST /oauth/revoke_token/`` — forgets an access or refresh token.

Access tokens live ``archive.token_lifetime`` seconds (default ten hours),
so a test can shorten it to exercise refreshing.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from ..errors import AuthenticationError
from .server import ApiError, Request, Response

if TYPE_CHECKING:
    from .generator import User
    from .server import LocalArchive

OOB = "urn:ietf:wg:oauth:2.0:oob"
CODE_LIFETIME = 600.0


@dataclass
class _Grant:
    user: User
    client_id: str
    redirect_uri: str
    challenge: str
    expires: float


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


#: the redirect URIs registered for the clients, as the archive's OAuth application lists them: a code
#: is sent nowhere else (the official CLI and this library use the out-of-band one)
REGISTERED_REDIRECT_URIS: set[str] = {OOB}


def _same_secret(given: str, known: str) -> bool:
    """A constant-time comparison that takes any text (compare_digest refuses non-ASCII str)."""
    return secrets.compare_digest(given.encode("utf-8", "surrogatepass"), known.encode("utf-8", "surrogatepass"))


def _form(req: Request) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    return Response.json({"error": error, "error_description": description}, status)


def _page(title: str, body: str, status: int = 200) -> Response:
    text = (f"<!doctype html><html><head><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return Response(status, text.encode(), "text/html; charset=utf-8")


_FIELDS = ("response_type", "client_id", "redirect_uri", "code_challenge", "code_challenge_method", "state", "scope")


def _sign_in_form(params: dict[str, str], message: str = "") -> Response:
    hidden = "".join(f'<input type="hidden" name="{name}" value="{html.escape(params.get(name, ""))}">'
                     for name in _FIELDS if params.get(name) is not None)
    notice = f'<p class="error">{html.escape(message)}</p>' if message else ""
    return _page("Sign in to the ISIC Archive", (
        f'{notice}<form method="post" action="/oauth/authorize/">{hidden}'
        '<label>Login <input name="login"></label> <label>Password <input name="password" type="password"></label>'
        '<button type="submit">Sign in</button></form>'), 401 if message else 200)


def register(archive: LocalArchive) -> None:
    """Add the ``/oauth`` routes to the archive's router."""
    data = archive.data
    grants: dict[str, _Grant] = {}
    refresh_tokens: dict[str, User] = {}

    def check_request(params: dict[str, str]) -> None:
        if params.get("response_type") != "code":
            raise ApiError(400, "unsupported_response_type: only the authorization code flow is offered")
        if not params.get("client_id"):
            raise ApiError(400, "invalid_request: client_id is missing")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            raise ApiError(400, "invalid_request: PKCE with code_challenge_method=S256 is required")
        if (params.get("redirect_uri") or OOB) not in REGISTERED_REDIRECT_URIS:
            raise ApiError(400, "invalid_request: Mismatching redirect URI (it is not registered for this client)")

    def authorize_page(req: Request) -> Response:
        params = dict(req.query)
        check_request(params)
        return _sign_in_form(params)

    def authorize(req: Request) -> Response:
        form = _form(req)
        check_request(form)
        user = data.users_by_login.get(form.get("login", ""))
        if user is None or not _same_secret(form.get("password", ""), user.password):
            return _sign_in_form(form, "Login or password is incorrect.")
        code = secrets.token_urlsafe(24)
        redirect_uri = form.get("redirect_uri") or OOB
        grants[code] = _Grant(user, form["client_id"], redirect_uri, form["code_challenge"],
                              time.monotonic() + CODE_LIFETIME)
        if redirect_uri == OOB:
            return _page("Success", "<p>Copy this code and paste it into your application:</p>"
                                    f'<code id="authorization-code">{html.escape(code)}</code>')
        answer = {"code": code, **({"state": form["state"]} if form.get("state") else {})}
        separator = "&" if "?" in redirect_uri else "?"
        return Response(302, b"", "text/plain", {"Location": f"{redirect_uri}{separator}{urlencode(answer)}"})

    def tokens_for(user: User) -> Response:
        lifetime = archive.token_lifetime
        refresh = secrets.token_hex(24)
        refresh_tokens[refresh] = user
        return Response.json({"access_token": archive.issue_token(user, lifetime), "token_type": "Bearer",
                              "expires_in": int(lifetime), "refresh_token": refresh, "scope": "identity"})

    def token(req: Request) -> Response:
        form = _form(req)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            grant = grants.pop(form.get("code", ""), None)  # a code is good for one try
            if grant is None or grant.expires < time.monotonic():
                return _oauth_error("invalid_grant", "The authorization code is unknown, used or expired.")
            if form.get("client_id") and form["client_id"] != grant.client_id:
                return _oauth_error("invalid_grant", "The code was issued to another client.")
            if form.get("redirect_uri", grant.redirect_uri) != grant.redirect_uri:
                return _oauth_error("invalid_grant", "Mismatching redirect URI.")
            verifier = form.get("code_verifier", "")
            if not verifier or not secrets.compare_digest(s256(verifier), grant.challenge):
                return _oauth_error("invalid_grant", "Code verifier does not match the challenge.")
            return tokens_for(grant.user)
        if grant_type == "refresh_token":
            user = refresh_tokens.pop(form.get("refresh_token", ""), None)  # rotated on use
            if user is None:
                return _oauth_error("invalid_grant", "The refresh token is unknown or revoked.")
            return tokens_for(user)
        if grant_type == "password":
            user = data.users_by_login.get(form.get("username", ""))
            if user is None or not _same_secret(form.get("password", ""), user.password):
                return _oauth_error("invalid_grant", "Invalid credentials given.")
            return tokens_for(user)
        return _oauth_error("unsupported_grant_type", f"Grant type {grant_type!r} is not offered.")

    def revoke(req: Request) -> Response:
        form = _form(req)
        value = form.get("token", "")
        refresh_tokens.pop(value, None)
        archive.revoke_token(value)
        return Response(200, b"", "text/plain")

    archive.router.add("oauth", "GET", r"authorize", authorize_page)
    archive.router.add("oauth", "POST", r"authorize", authorize)
    archive.router.add("oauth", "POST", r"token", token)
    archive.router.add("oauth", "POST", r"revoke_token", revoke)


_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
_CODE = re.compile(r'<code id="authorization-code">([^<]+)</code>')


def sign_in_code(authorization_url: str, login: str, password: str, timeout: float = 10.0,
                 verify: bool | str = True) -> str:
    """Play the person at the sign-in page: open it, sign in, read the code it shows.

    Goes through the page over HTTP as a browser would, so tests of code that
    calls :meth:`IsicApi.sign_in <isicarchive.IsicApi.sign_in>` (or the
    official CLI's ``isic user login``) can answer its prompt.
    """
    page = requests.get(authorization_url, timeout=timeout, verify=verify)
    if page.status_code != 200 or "<form" not in page.text:
        raise AuthenticationError(f"the sign-in page answered HTTP {page.status_code}")
    fields = {name: html.unescape(value) for name, value in _HIDDEN.findall(page.text)}
    fields.update(login=login, password=password)
    parts = urlsplit(authorization_url)
    answer = requests.post(f"{parts.scheme}://{parts.netloc}/oauth/authorize/", data=fields, timeout=timeout,
                           allow_redirects=False, verify=verify)
    found = _CODE.search(answer.text)
    if answer.status_code != 200 or not found:
        raise AuthenticationError(f"the sign-in page refused {login!r} (HTTP {answer.status_code})")
    return html.unescape(found.group(1))
