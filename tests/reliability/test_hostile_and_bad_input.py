"""A hostile or broken server, and bad input from users: one clear IsicError each, nothing leaked."""

from __future__ import annotations

import gzip
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from reliability_report import record  # type: ignore[import-not-found]

from isicarchive import (
    ArchiveUnavailableError,
    AuthenticationError,
    IsicApi,
    IsicError,
    NotFoundError,
    QueryError,
)
from isicarchive.testing import LocalArchive


@pytest.fixture
def server() -> LocalArchive:
    with LocalArchive(seed=51) as archive:
        yield archive


def fast(server: LocalArchive, *args: Any, **kw: Any) -> IsicApi:
    kw.setdefault("progress", False)
    kw.setdefault("backoff", 0.001)
    kw.setdefault("retries", 2)
    kw.setdefault("api_version", 1)  # the legacy API unless a test asks for v2
    return IsicApi(*args, hostname=server.url, **kw)


def test_html_error_pages(server: LocalArchive) -> None:
    server.faults.add("html", r"/study$", status=502)
    with pytest.raises(ArchiveUnavailableError, match="502"):
        fast(server).study()
    server.faults.clear()
    server.faults.add("html", r"/study$", status=404)
    # Girder never answers 404 on its own routes: a 404 page there means no v1 service at that address
    with pytest.raises(ArchiveUnavailableError, match=r"api_version=2") as caught:
        fast(server).study()
    assert "<" not in str(caught.value)
    record("hostile server", "listing studies", "HTML error page (502, 404)",
           "ArchiveUnavailableError after retries / one saying v1 does not answer there (use api_version=2); "
           "no HTML in the message")


def test_wrong_content_type_and_shape(server: LocalArchive) -> None:
    server.faults.add("wrong_type", r"/study/[0-9a-f]{24}$", body=b"<html>oops</html>", content_type="text/html")
    api = fast(server)
    study_id = next(s["_id"] for s in server.data.studies if s["public"])
    with pytest.raises(ArchiveUnavailableError, match="not JSON"):
        api.study(study_id)
    server.faults.clear()
    server.faults.add("wrong_type", r"/study/[0-9a-f]{24}$", body=b"[1, 2, 3]")
    with pytest.raises(ArchiveUnavailableError, match="an array where an object"):
        api.study(study_id)
    record("hostile server", "study look-up", "text/html body; a JSON array where an object is expected",
           "ArchiveUnavailableError saying what came back")


def test_gigantic_json_is_refused(server: LocalArchive) -> None:
    server.faults.add("wrong_type", r"/study$", body=b"[" + b"1," * 600_000 + b"1]")
    api = fast(server)
    api.context.transport.max_json_bytes = 1_000_000
    with pytest.raises(IsicError, match="accepted for JSON"):
        api.study()
    record("hostile server", "listing", "a JSON answer over the size cap", "refused with IsicError, not loaded")


def test_hostile_image_names_stay_inside_the_cache(server: LocalArchive, tmp_path: Path) -> None:
    victim = server.data.images_by_id[server.data.visible_images(None)[0]["_id"]]
    victim["name"] = "../../../escaped/evil"
    api = fast(server, cache_folder=tmp_path / "cache")
    image = api.image(victim["_id"])
    image.load_imagedata()
    files = [p for p in (tmp_path / "cache").rglob("image_*")]
    assert files and all(p.resolve().is_relative_to((tmp_path / "cache").resolve()) for p in files)
    assert not (tmp_path / "escaped").exists()
    result = api.download_images([victim], folder=tmp_path / "out")
    assert result.ok and all(p.resolve().parent == (tmp_path / "out").resolve() for p in result.paths.values())
    record("hostile server", "image name '../../../escaped/evil'", "path separators in a server-provided name",
           "sanitised; every file stays inside the cache/output folder")


def test_token_does_not_follow_a_redirect_to_another_host(server: LocalArchive) -> None:
    api = fast(server, "alice", server.credentials["alice"])
    study_id = next(s["_id"] for s in server.data.studies if s["public"])
    # localhost is another origin than 127.0.0.1, though it reaches the same server (which logs the headers)
    target = server.url.replace("127.0.0.1", "localhost") + f"/api/v1/study/{study_id}"
    server.faults.add("redirect", rf"/study/{study_id}$", times=1, location=target)
    server.clear_log()
    study = api.study(study_id)
    assert study.id == study_id
    first, followed = server.requests(rf"/study/{study_id}$")[:2]
    assert first.authorized and first.status == 302
    assert not followed.authorized
    record("hostile server", "look-up", "302 redirect to another host", "followed without the token")


def test_plain_http_refused_for_remote_hosts() -> None:
    for host in ("http://isic-archive.com", "http://10.0.0.5", "http://example.org:8080"):
        with pytest.raises(IsicError, match="refusing plain http"):
            IsicApi(hostname=host)
    assert IsicApi(hostname="http://localhost:1").base_url.startswith("http://localhost")
    record("hostile server", "IsicApi(hostname='http://…')", "non-loopback plain HTTP",
           "refused before any request")


BAD_INPUTS: list[tuple[str, Callable[[IsicApi], Any], type]] = [
    ("image(12.5)", lambda api: api.image(12.5), QueryError),
    ("image(None-like dict)", lambda api: api.image({"x": 1}), QueryError),
    ("image('')", lambda api: api.image(""), QueryError),
    ("image('ISIC_9999999')", lambda api: api.image("ISIC_9999999"), NotFoundError),
    ("image(24 hex, unknown)", lambda api: api.image("0" * 24), NotFoundError),
    ("image('../../etc')", lambda api: api.image("../../etc"), NotFoundError),
    ("study('no such')", lambda api: api.study("no such"), NotFoundError),
    ("dataset(['list'])", lambda api: api.dataset(["list"]), QueryError),
    ("annotation('x')", lambda api: api.annotation("x"), NotFoundError),
    ("segmentation('x')", lambda api: api.segmentation("x"), NotFoundError),
    ("select_images('text')", lambda api: api.select_images("meta.x == 1"), QueryError),
    ("select_images([a, 'like', 1])", lambda api: api.select_images(["a", "like", 1]), QueryError),
    ("select_images([a, 'in', 5])", lambda api: api.select_images(["a", "in", 5]), QueryError),
    ("select_images([a, 'match', '('])", lambda api: api.select_images(["a", "match", "("]), QueryError),
    ("download_images(workers=0)", lambda api: api.download_images(["ISIC_0000000"], folder="/tmp/x", workers=0),
     IsicError),
    ("IsicApi(username=5)", lambda api: IsicApi(5), IsicError),  # type: ignore[arg-type]
    ("IsicApi(api_version=3)", lambda api: IsicApi(api_version=3), IsicError),
    ("IsicApi(hostname='')", lambda api: IsicApi(hostname=" "), IsicError),
    ("IsicApi('bob', 'wrong')", lambda api: IsicApi("bob", "wrong", hostname=api.hostname, api_version=1),
     AuthenticationError),
]


@pytest.mark.parametrize("label,call,error", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_one_clear_error(server: LocalArchive, label: str, call: Callable, error: type) -> None:
    api = fast(server)
    with pytest.raises(error) as caught:
        call(api)
    assert isinstance(caught.value, IsicError)
    assert str(caught.value)
    record("bad input", label, "from the user", f"{type(caught.value).__name__}: {str(caught.value)[:60]}…")


def test_no_password_and_nobody_to_ask_fails_fast(server: LocalArchive) -> None:
    with pytest.raises(AuthenticationError, match="not interactive"):
        IsicApi("alice", hostname=server.url, api_version=1)
    record("credentials", "IsicApi('alice') with no password anywhere", "no TTY (CI)",
           "AuthenticationError at once, never a hang")


def test_secrets_stay_out_of_tracebacks_logs_and_files(server: LocalArchive, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    password = server.credentials["alice"]
    caplog.set_level(logging.DEBUG)
    api = fast(server, "alice", password, cache_folder=tmp_path, debug=True)
    token = api.context.transport._token
    api.cache_images()
    server.faults.add("status", status=500)
    try:
        api.dataset("Private SONIC")
    except IsicError:
        text = traceback.format_exc()
    else:  # pragma: no cover
        pytest.fail("expected an error")
    surfaces = [text, caplog.text, repr(api), str(api), api._repr_html_(), repr(api.context.transport.session.headers)]
    for surface in surfaces:
        assert password not in surface and token not in surface
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            data = gzip.decompress(data) if path.name.endswith(".gz") else data
            assert password.encode() not in data and token.encode() not in data
    record("secrets", "password and token", "reprs, debug logs, tracebacks, cache files",
           "absent from every one (grepped)")


def test_credentials_in_the_hostname_are_refused_without_echoing_them() -> None:
    from isicarchive import IsicApi, IsicError

    with pytest.raises(IsicError, match="must not carry a user name or password") as caught:
        IsicApi(hostname="https://alice:s3cret-pw@isic.example.org", api_version=1, progress=False)
    assert "s3cret-pw" not in str(caught.value) and "alice" not in str(caught.value)
    record("bad input", "hostname https://user:password@host", "from the user",
           "IsicError naming neither the user nor the password")


def test_metadata_csv_cells_never_read_as_formulas(server: LocalArchive, tmp_path: Path) -> None:
    import csv

    from isicarchive import IsicApi

    api = IsicApi(hostname=server.url, api_version=1, progress=False)
    record_ = dict(api.image(server.data.visible_images(None)[0]["name"]).as_json())
    record_["meta"] = {**record_["meta"], "clinical": {**record_["meta"]["clinical"], "sex": "=HYPERLINK(\"x\")",
                                                       "note": "+1", "other": "-2", "at": "@SUM(A1)"}}
    api.download_images([record_], folder=tmp_path / "out")
    with open(tmp_path / "out" / "metadata.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["sex"] == '\t=HYPERLINK("x")' and row["note"] == "\t+1" and row["other"] == "\t-2"
    assert row["at"] == "\t@SUM(A1)"
    record("hostile data", "metadata.csv of a folder download", "cells starting = + - @",
           "written with a leading tab (as the archive's own file), never as formulas")
