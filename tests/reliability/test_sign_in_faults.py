"""v2 token renewal and expired file links under the archive's faults."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

# early faults only: a refresh token is spent once the archive handles the request
from fault_kinds import EARLY_FAULTS  # type: ignore[import-not-found]
from reliability_report import record  # type: ignore[import-not-found]

from isicarchive import ArchiveUnavailableError, AuthenticationError, IsicApi
from isicarchive.testing import LocalArchive


@pytest.fixture(scope="module")
def server() -> Any:
    with LocalArchive(seed=41) as archive:
        yield archive


def session_with_expiring_token(server: LocalArchive, retries: int) -> IsicApi:
    api = IsicApi(hostname=server.url, api_version=2, progress=False, retries=retries, backoff=0.01)
    request = api.context.backend.oauth.start()
    api.context.backend.use_token(api.context.backend.oauth.finish(request, server.sign_in_code(request.url, "alice")))
    token = api.context.backend.oauth_token
    server.revoke_token(token.access_token)  # it has expired at the archive ...
    token.expires_at = time.time() - 1  # ... and the client knows it from expires_in
    api.context.transport.set_token(token.access_token, token.expires_at)
    return api


def private_image(server: LocalArchive) -> str:
    public = {im["_id"] for im in server.data.visible_images(None)}
    return next(im["name"] for im in server.data.images if im["_id"] not in public)


@pytest.mark.parametrize("fault", list(EARLY_FAULTS))
def test_token_renewal_survives_transient_faults(server: LocalArchive, fault: str) -> None:
    settings = dict(EARLY_FAULTS[fault])
    api = session_with_expiring_token(server, retries=4)
    server.faults.clear()
    rule = server.faults.add(settings.pop("kind"), r"^/oauth/token", times=2, **settings)
    try:
        found = api.image(private_image(server))
    finally:
        server.faults.clear()
    assert found.name == private_image(server) and rule.fired == 2
    assert server.user_for_token(api.context.backend.oauth_token.access_token).login == "alice"
    record("v2 sign-in", "token renewal before a private look-up", fault,
           "renewed after the faults; the look-up sees the private image")


@pytest.mark.parametrize("fault", list(EARLY_FAULTS))
def test_token_renewal_under_persistent_faults_fails_clearly(server: LocalArchive, fault: str) -> None:
    settings = dict(EARLY_FAULTS[fault])
    api = session_with_expiring_token(server, retries=2)
    server.faults.clear()
    server.faults.add(settings.pop("kind"), r"^/oauth/token", **settings)
    started = time.monotonic()
    try:
        with pytest.raises(ArchiveUnavailableError, match="oauth/token"):
            api.image(private_image(server))
    finally:
        server.faults.clear()
    took = time.monotonic() - started
    assert took < 60
    # once the archive answers again, the same session renews and carries on
    assert api.image(private_image(server)).name == private_image(server)
    record("v2 sign-in", "token renewal before a private look-up", f"{fault}, persistent",
           f"ArchiveUnavailableError naming the token endpoint ({took:.1f} s); the session recovers afterwards")


def test_expired_file_links_are_renewed_under_storage_faults(server: LocalArchive, tmp_path: Path) -> None:
    api = IsicApi("alice", server.credentials["alice"], hostname=server.url, api_version=2, progress=False,
                  retries=4, backoff=0.01, cache_folder=tmp_path / "cache")
    records = [r for r in api.cache_images().values() if not r["public"]]  # signed, expiring links
    assert len(records) >= 15
    server.expire_file_urls()
    server.faults.clear()
    rule = server.faults.add("status", r"^/storage/", probability=0.3, status=503)
    try:
        result = api.download_images(records, folder=tmp_path / "out")
    finally:
        server.faults.clear()
    assert result.ok and len(list((tmp_path / "out").glob("ISIC_*.jpg"))) == len(records)
    record("v2 downloads", f"{len(records)} private images from records whose file links expired",
           "503 on 30% of storage requests",
           f"every link renewed, every file complete ({rule.fired} faults absorbed)")


def test_a_renewal_answer_lost_in_transit_never_leaves_a_quietly_anonymous_session(server: LocalArchive) -> None:
    # the archive handles the refresh (spending the refresh token) and the answer is cut off; the retry is refused
    api = session_with_expiring_token(server, retries=4)
    server.faults.clear()
    server.faults.add("reset", r"^/oauth/token", times=1, fraction=0.5)
    server.clear_log()
    try:
        with pytest.raises(AuthenticationError, match="sign in again"):
            api.image(private_image(server))
        with pytest.raises(AuthenticationError, match="sign in again"):
            next(api.image_list())  # every later request says so too, instead of answering as anonymous
    finally:
        server.faults.clear()
    assert len(server.requests(r"^/oauth/token")) == 2  # the lost answer and one refused retry, no more
    record("v2 sign-in", "token renewal before a private look-up", "reset mid-body (refresh token spent)",
           "AuthenticationError asking to sign in again, on every request: never quietly anonymous")


def test_an_unrenewable_token_does_not_stop_downloads_from_storage(server: LocalArchive, tmp_path: Path) -> None:
    # file links are pre-signed and need no token: an expired sign-in must not block them
    api = IsicApi(hostname=server.url, api_version=2, progress=False, cache_folder=tmp_path / "cache")
    records = list(api.cache_images().values())[:3]
    signed = session_with_expiring_token(server, retries=1)
    signed.context.backend.oauth.revoke(signed.context.backend.oauth_token)  # and it cannot be renewed either
    result = signed.download_images(records, folder=tmp_path / "out")
    assert result.ok and len(list((tmp_path / "out").glob("ISIC_*.jpg"))) == 3
    with pytest.raises(AuthenticationError, match="sign in again"):
        signed.image(private_image(server))
    record("v2 sign-in", "bulk download of pre-signed links", "token expired and unrenewable",
           "files still download (storage needs no token); archive requests ask to sign in again")
