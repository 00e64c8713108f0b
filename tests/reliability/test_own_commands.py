"""Our own commands and the local archive: `cache clean` deletes only in caches, a signed-in session's
images are its owner's alone, `isicarchive serve` answers hostile requests (and only registered
redirect URIs get a code)."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from reliability_report import record  # type: ignore[import-not-found]

from isicarchive import IsicApi
from isicarchive.cli import main as cli
from isicarchive.oauth import CLIENT_ID, pkce_pair
from isicarchive.testing import LocalArchive


@pytest.fixture(scope="module")
def archive() -> Iterator[LocalArchive]:
    with LocalArchive(seed=57) as server:
        yield server


def test_cache_clean_refuses_a_folder_that_is_no_cache(tmp_path: Path) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.docx").write_text("years of work")
    for action in (["clean", "--all"], ["clean"], ["verify"]):
        assert cli(["--cache-folder", str(folder), "--quiet", "cache", *action]) != 0
    assert (folder / "thesis.docx").read_text() == "years of work"
    record("our commands", "`isicarchive cache clean --all` (and clean, verify)", "a folder without the cache marker",
           "refused with an error, nothing removed (was: the user's file deleted)")


def test_cache_clean_never_follows_a_link_out_of_the_cache(archive: LocalArchive, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    IsicApi(hostname=archive.url, api_version=1, progress=False, cache_folder=str(cache)).image(
        archive.data.images[0]["_id"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (cache / "0" / "elsewhere").symlink_to(outside, target_is_directory=True)
    (cache / "1" / "keep.lnk").symlink_to(outside / "keep.txt")
    assert cli(["--cache-folder", str(cache), "--quiet", "cache", "clean", "--all"]) == 0
    assert (outside / "keep.txt").read_text() == "mine"
    record("our commands", "`isicarchive cache clean --all`", "links inside the cache to a folder and a file outside",
           "the links' targets are untouched")


def test_a_signed_in_sessions_images_are_its_owners_alone(archive: LocalArchive, tmp_path: Path) -> None:
    login, password = next(iter(archive.credentials.items()))
    api = IsicApi(login, password, hostname=archive.url, api_version=1, progress=False, cache_folder=str(tmp_path))
    user = archive.data.users_by_login[login]
    private = [im for im in archive.data.visible_images(user) if not im.get("public", True)]
    image = api.image((private or archive.data.visible_images(user))[0]["_id"])
    image.load_imagedata()
    image.load_superpixels()
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(("image_", "spimg_"))
             and not p.name.endswith(".lock")]
    assert files
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert all(mode == 0o600 for mode in modes.values()), modes
    layers = [p for p in tmp_path.iterdir() if p.name.startswith("@")]
    assert layers and all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in layers)
    record("our commands", "a signed-in session's cache", "private images and superpixels downloaded",
           "written 0600 (as its records), its user layer 0700 (was 0644 / 0755)")


def raw_request(url: str, head: str, body: bytes = b"", wait: float = 5.0) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait) as conn:
        conn.sendall(head.encode() + b"\r\n\r\n" + body)
        conn.shutdown(socket.SHUT_WR) if not body else None
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)


def test_serve_answers_bad_lengths_and_caps_bodies(archive: LocalArchive) -> None:
    host = urlsplit(archive.url).netloc
    for length, status in (("-1", b" 400 "), ("abc", b" 400 "), (str(10**12), b" 413 ")):
        answer = raw_request(archive.url, f"POST /api/v2/images/search/ HTTP/1.1\r\nHost: {host}\r\n"
                                          f"Content-Length: {length}", wait=5.0)
        assert answer.split(b"\r\n", 1)[0].endswith(status.strip()) or status in answer[:20], (length, answer[:80])
    record("local archive (`isicarchive serve`)", "POST with Content-Length -1, abc, 10^12",
           "bodies never sent", "400, 400, 413 at once (was: -1 read until the connection closed; no cap)")


def test_serve_answers_a_non_ascii_password(archive: LocalArchive) -> None:
    login = next(iter(archive.credentials))
    answer = requests.post(f"{archive.url}/oauth/token/", data={"grant_type": "password", "username": login,
                                                               "password": "pässwörd-✓", "client_id": CLIENT_ID},
                           timeout=5)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    record("local archive (`isicarchive serve`)", "OAuth password grant", "a non-ASCII password",
           "400 invalid_grant (was: no answer, the handler crashed)")


def test_serve_sends_codes_only_to_registered_redirect_uris(archive: LocalArchive) -> None:
    login, password = next(iter(archive.credentials.items()))
    _, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": "https://evil.example/catch",
              "code_challenge": challenge, "code_challenge_method": "S256"}
    page = requests.get(f"{archive.url}/oauth/authorize/?{urlencode(params)}", timeout=5, allow_redirects=False)
    assert page.status_code == 400
    posted = requests.post(f"{archive.url}/oauth/authorize/", data={**params, "login": login, "password": password},
                           timeout=5, allow_redirects=False)
    assert posted.status_code == 400 and "evil.example" not in posted.headers.get("Location", "")
    record("local archive (`isicarchive serve`)", "OAuth authorize", "redirect_uri https://evil.example/catch",
           "400 on the page and on the signed-in POST: no code leaves for an unregistered address")
