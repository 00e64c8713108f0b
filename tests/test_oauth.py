"""v2 sign-in: OAuth authorization code with PKCE (as the official CLI), token storage and renewal."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import keyring
import pytest
import requests
from cli_runner import RUNNER, run_cli

from isicarchive import AuthenticationError, IsicApi, credentials
from isicarchive.oauth import CLIENT_ID, OAuthClient, OAuthToken, pkce_pair
from isicarchive.testing import LocalArchive

KEYRING_DIR = Path(__file__).parent


@pytest.fixture()
def archive() -> Any:
    with LocalArchive(seed=23) as server:
        yield server


def signed_in(archive: LocalArchive, login: str, label: str | None = None, store: bool = True) -> IsicApi:
    """A v2 session that went through the sign-in page as ``login`` (the person reads the shown address)."""
    api = IsicApi(hostname=archive.url, api_version=2, progress=False)
    shown: list[str] = []
    api.sign_in(label, store=store, say=shown.append, open_browser=False,
                ask=lambda prompt: archive.sign_in_code(next(line for line in shown if line.startswith("http")),
                                                        login))
    return api


def private_image(archive: LocalArchive) -> str:
    public = {im["_id"] for im in archive.data.visible_images(None)}
    return next(im["name"] for im in archive.data.images if im["_id"] not in public)


# ------------------------------------------------------------------ PKCE
def test_pkce_pair_follows_rfc_7636() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128 and re.fullmatch(r"[A-Za-z0-9\-._~]+", verifier)
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    assert challenge == expected
    assert pkce_pair()[0] != verifier


def test_authorization_url_carries_the_challenge_and_the_official_client(archive: LocalArchive) -> None:
    api = IsicApi(hostname=archive.url, api_version=2, progress=False)
    request = api.context.backend.oauth.start()
    parts = urlsplit(request.url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.path == "/oauth/authorize/"
    assert query["client_id"] == CLIENT_ID and query["response_type"] == "code"
    assert query["redirect_uri"] == "urn:ietf:wg:oauth:2.0:oob" and query["code_challenge_method"] == "S256"
    assert query["code_challenge"] != request.verifier and request.verifier not in request.url
    assert request.verifier not in repr(request)


# --------------------------------------------------------------- sign-in
def test_sign_in_end_to_end_stores_a_renewable_token(archive: LocalArchive, memory_keyring: Any) -> None:
    api = signed_in(archive, "alice", "alice")
    assert api.authenticated and api.user["email"] == "alice@example.org"
    assert api.image(private_image(archive)).name  # a private image: the token is alice's
    stored = OAuthToken.from_json(keyring.get_password(credentials.keyring_service(api.base_url), "alice:token"))
    assert stored.refresh_token and stored.expires_at and not stored.expired()
    assert stored.access_token not in repr(stored) and stored.refresh_token not in repr(stored)
    # a later session finds it in the keyring: no prompt, no password
    again = IsicApi("alice", hostname=archive.url, api_version=2, progress=False)
    assert again.user["email"] == "alice@example.org"
    assert not archive.requests(r"/oauth/token")[1:]  # only the sign-in itself traded a code


def test_sign_in_label_defaults_to_the_accounts_email(archive: LocalArchive, memory_keyring: Any) -> None:
    api = signed_in(archive, "bob")
    assert api.username == "bob@example.org"
    assert credentials.load_token(api.base_url, "bob@example.org") is not None


def test_a_code_works_once_and_only_with_its_verifier(archive: LocalArchive) -> None:
    api = IsicApi(hostname=archive.url, api_version=2, progress=False)
    oauth: OAuthClient = api.context.backend.oauth
    request = oauth.start()
    code = archive.sign_in_code(request.url, "alice")
    forged = type(request)(request.url, request.state, pkce_pair()[0])
    with pytest.raises(AuthenticationError, match="verifier"):
        oauth.finish(forged, code)
    request = oauth.start()
    code = archive.sign_in_code(request.url, "alice")
    assert oauth.finish(request, code).access_token
    with pytest.raises(AuthenticationError, match="unknown, used or expired"):
        oauth.finish(request, code)
    with pytest.raises(AuthenticationError, match="no code"):
        oauth.finish(oauth.start(), "  ")


def test_the_sign_in_page_checks_the_password_and_the_pkce_request(archive: LocalArchive) -> None:
    api = IsicApi(hostname=archive.url, api_version=2, progress=False)
    url = api.context.backend.oauth.start().url
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and 'name="password"' in page.text and "alice" not in page.text
    with pytest.raises(AuthenticationError, match="refused 'alice'"):
        archive.sign_in_code(url, "alice", "wrong")
    no_pkce = re.sub(r"&code_challenge=[^&]+", "", url)
    assert requests.get(no_pkce, timeout=10).status_code == 400


def test_no_token_and_nobody_to_ask_is_a_clear_error(archive: LocalArchive, memory_keyring: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    started = time.monotonic()
    with pytest.raises(AuthenticationError, match="isicarchive --api v2 login"):
        IsicApi("carol", hostname=archive.url, api_version=2, progress=False)
    assert time.monotonic() - started < 30  # refused at once, never waiting for input


# --------------------------------------------------------------- renewal
def test_an_expired_stored_token_is_renewed_and_written_back(archive: LocalArchive, memory_keyring: Any) -> None:
    archive.token_lifetime = 30  # inside the renewal margin: counts as expired at once
    api = signed_in(archive, "alice", "alice")
    first = credentials.load_token(api.base_url, "alice")
    archive.token_lifetime = 3600
    archive.clear_log()
    again = IsicApi("alice", hostname=archive.url, api_version=2, progress=False)
    assert again.user["email"] == "alice@example.org"
    renewed = credentials.load_token(api.base_url, "alice")
    assert renewed.access_token != first.access_token and renewed.refresh_token != first.refresh_token
    assert len(archive.requests(r"/oauth/token", "POST")) == 1
    # refresh tokens rotate: the old one is spent
    with pytest.raises(AuthenticationError, match="refused"):
        OAuthClient(again.context.transport, f"{archive.url}/oauth").refresh(first)


def expire_now(archive: LocalArchive, api: IsicApi, *, client_knows: bool) -> None:
    """End the session's access token at the archive; the client learns of it only if ``client_knows``."""
    token = api.context.backend.oauth_token
    archive.revoke_token(token.access_token)  # the refresh token stays good
    token.expires_at = time.time() - 1 if client_knows else None
    api.context.transport.set_token(token.access_token, token.expires_at)


def test_a_token_expiring_mid_session_is_renewed_once_for_all_threads(archive: LocalArchive) -> None:
    # the archive takes an expired token for no token (private images vanish, no 401): renew before expiry
    from concurrent.futures import ThreadPoolExecutor

    api = signed_in(archive, "alice", "alice", store=False)
    expire_now(archive, api, client_knows=True)
    archive.clear_log()
    private = private_image(archive)
    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(lambda _: api.context.backend.image(private)["name"], range(8)))
    assert names == [private] * 8
    assert len(archive.requests(r"/oauth/token", "POST")) == 1
    assert not any(r.authorized for r in archive.requests(r"^/oauth/"))  # the token endpoint needs no bearer
    assert all(r.status == 200 and r.user == "alice" for r in archive.requests(r"/images/"))


def test_a_401_renews_a_token_of_unknown_expiry(archive: LocalArchive) -> None:
    api = signed_in(archive, "alice", "alice", store=False)
    expire_now(archive, api, client_knows=False)
    archive.clear_log()
    assert api.context.backend.me()["email"] == "alice@example.org"
    assert [r.status for r in archive.requests(r"/users/me")] == [401, 200]
    assert len(archive.requests(r"/oauth/token", "POST")) == 1


def test_many_threads_meeting_a_401_share_one_renewal(archive: LocalArchive) -> None:
    from concurrent.futures import ThreadPoolExecutor

    api = signed_in(archive, "alice", "alice", store=False)
    expire_now(archive, api, client_knows=False)
    archive.clear_log()
    with ThreadPoolExecutor(8) as pool:
        users = list(pool.map(lambda _: api.context.backend.me()["email"], range(16)))
    assert users == ["alice@example.org"] * 16
    assert len(archive.requests(r"/oauth/token", "POST")) == 1


def test_the_local_archive_expires_tokens_after_their_lifetime(archive: LocalArchive) -> None:
    archive.token_lifetime = 0.2
    token = requests.post(f"{archive.url}/oauth/token/", timeout=10, data={
        "grant_type": "password", "username": "alice", "password": archive.credentials["alice"]}).json()
    assert token["expires_in"] == 0
    me = f"{archive.v2_url}/users/me/"
    deadline = time.monotonic() + 10
    while requests.get(me, headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=10).ok:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_an_unrenewable_expired_token_reports_the_401(archive: LocalArchive) -> None:
    token = archive.issue_token(archive.data.users_by_login["alice"], lifetime=0.0)
    with pytest.raises(AuthenticationError, match="token was refused"):
        IsicApi(hostname=archive.url, api_version=2, token=token, progress=False)


def test_logout_revokes_both_tokens(archive: LocalArchive) -> None:
    api = signed_in(archive, "alice", "alice", store=False)
    token = api.context.backend.oauth_token
    api.logout()
    assert archive.user_for_token(token.access_token) is None
    with pytest.raises(AuthenticationError):
        OAuthClient(api.context.transport, f"{archive.url}/oauth").refresh(token)


# ------------------------------------------------------------------- CLI
def _cli_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHON_KEYRING_BACKEND": "file_keyring.FileKeyring", "PYTHONPATH": str(KEYRING_DIR),
            "ISICARCHIVE_TEST_KEYRING": str(tmp_path / "ring.json"), "CI": "true"}


def cli_login(archive: LocalArchive, env: dict[str, str], login: str) -> tuple[int, str, str]:
    """``isicarchive --api v2 login``, with the person answering its prompt from the sign-in page (forked from
    the CLI runner's parent, tests/cli_runner.py, with its stdin a pipe)."""
    args = ["--host", archive.url, "--api", "v2", "login", "--user", login]
    with RUNNER.talk(args, env={k: v for k, v in env.items() if k != "DISPLAY"}, timeout=60) as proc:
        out, err = proc.communicate(archive.sign_in_code(proc.line_starting("http"), login) + "\n", timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out, err


def test_cli_login_signs_in_through_the_web_page(archive: LocalArchive, tmp_path: Path) -> None:
    env = _cli_env(tmp_path)
    returncode, out, err = cli_login(archive, env, "alice")
    assert returncode == 0, err
    assert "Signed in as alice" in out
    ring = json.loads((tmp_path / "ring.json").read_text())
    entry = next(v for k, v in ring.items() if k.endswith("|alice:token"))
    assert json.loads(entry)["refresh_token"]
    assert json.loads(entry)["access_token"] not in out + err
    private = next(d["name"] for d in archive.data.datasets if not d["public"])
    shown = run_cli("--host", archive.url, "--api", "v2", "--user", "alice", "--json", "dataset", "show", private,
                    env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    logout = run_cli("--host", archive.url, "--api", "v2", "--user", "alice", "logout", env=env, timeout=60)
    assert logout.returncode == 0 and "removed" in logout.stdout
    assert archive.user_for_token(json.loads(entry)["access_token"]) is None


def test_cli_login_with_closed_stdin_fails_cleanly(archive: LocalArchive, tmp_path: Path) -> None:
    done = run_cli("--host", archive.url, "--api", "v2", "login", env=_cli_env(tmp_path), timeout=60)
    assert done.returncode == 3 and "no code was entered" in done.stderr


def test_sign_in_secrets_stay_out_of_logs_reprs_and_errors(archive: LocalArchive,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = IsicApi(hostname=archive.url, api_version=2, progress=False, debug=True)
    request = api.context.backend.oauth.start()
    code = archive.sign_in_code(request.url, "alice")
    token = api.context.backend.oauth.finish(request, code)
    api.context.backend.use_token(token)
    api.image(private_image(archive))
    with pytest.raises(AuthenticationError) as refused:
        api.context.backend.oauth.finish(request, code)  # spent
    shown = caplog.text + repr(api) + repr(token) + repr(request) + str(refused.value) + api._repr_html_()
    for secret in (token.access_token, token.refresh_token, code, request.verifier):
        assert secret and secret not in shown
    assert "GET" in caplog.text  # debug logging was on


def test_a_revoked_stored_token_leads_back_to_signing_in(archive: LocalArchive, memory_keyring: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    archive.token_lifetime = 30  # expired on arrival: the next session must refresh
    first = signed_in(archive, "alice", "alice")
    first.context.backend.oauth.revoke(first.context.backend.oauth_token)  # e.g. signed out on another machine
    monkeypatch.setenv("CI", "true")
    with pytest.raises(AuthenticationError, match="isicarchive --api v2 login --user alice"):
        IsicApi("alice", hostname=archive.url, api_version=2, progress=False)
    monkeypatch.delenv("CI")
    monkeypatch.setattr(credentials, "interactive", lambda: True)
    archive.token_lifetime = 3600
    shown: list[str] = []
    monkeypatch.setattr("builtins.print", shown.append)
    monkeypatch.setattr("builtins.input", lambda prompt: archive.sign_in_code(shown[-1], "alice"))
    again = IsicApi("alice", hostname=archive.url, api_version=2, progress=False)
    assert again.user["email"] == "alice@example.org"
    stored = credentials.load_token(again.base_url, "alice")
    assert stored.access_token == again.context.backend.oauth_token.access_token


def test_two_sessions_sharing_a_stored_token_both_renew(archive: LocalArchive, memory_keyring: Any) -> None:
    # as two processes would: both start from the keyring; the first to renew spends the other's refresh token
    signed_in(archive, "alice", "alice")
    one = IsicApi("alice", hostname=archive.url, api_version=2, progress=False)
    two = IsicApi("alice", hostname=archive.url, api_version=2, progress=False)
    assert one.context.backend.oauth_token.refresh_token == two.context.backend.oauth_token.refresh_token
    for api in (one, two):
        expire_now(archive, api, client_knows=True)
    private = private_image(archive)
    assert one.image(private).name == private  # renews; the keyring now holds its renewal
    assert two.image(private).name == private  # its own refresh is refused: it takes the renewal from the keyring
    assert two.context.backend.oauth_token.access_token == one.context.backend.oauth_token.access_token
    assert credentials.load_token(one.base_url, "alice").access_token == one.context.backend.oauth_token.access_token


def test_sign_in_over_https_with_the_local_archives_ca(memory_keyring: Any) -> None:
    pytest.importorskip("trustme")
    with LocalArchive(seed=4, https=True) as server:
        api = IsicApi(hostname=server.url, api_version=2, verify=server.ca_file, progress=False)
        shown: list[str] = []
        api.sign_in("alice", store=False, say=shown.append, open_browser=False,
                    ask=lambda prompt: server.sign_in_code(shown[-1], "alice"))
        assert shown[-1].startswith("https://") and api.user["email"] == "alice@example.org"


def test_without_a_keyring_signing_in_still_works_for_the_session(archive: LocalArchive,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from keyring.backends.fail import Keyring as NoKeyring

    previous = keyring.get_keyring()
    keyring.set_keyring(NoKeyring())
    try:
        api = signed_in(archive, "alice", "alice")
    finally:
        keyring.set_keyring(previous)
    assert api.user["email"] == "alice@example.org" and api.image(private_image(archive)).name
    assert "not kept" in caplog.text and "keyring" in caplog.text


def test_cli_login_without_a_keyring_says_so(archive: LocalArchive, tmp_path: Path) -> None:
    env = {**_cli_env(tmp_path), "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    returncode, out, err = cli_login(archive, env, "alice")
    assert returncode == 3 and "keyring" in err and "Signed in" not in out


def test_a_garbled_token_answer_is_an_authentication_error(archive: LocalArchive) -> None:
    api = IsicApi(hostname=archive.url, api_version=2, progress=False, retries=0)
    request = api.context.backend.oauth.start()
    code = archive.sign_in_code(request.url, "alice")
    archive.faults.add("malformed", r"^/oauth/token", times=5)
    try:
        with pytest.raises(AuthenticationError, match="not JSON"):
            api.context.backend.oauth.finish(request, code)
    finally:
        archive.faults.clear()
