"""A researcher's first day (issue #25): every trap they met, replayed with its message and its bounds.

Each test names the trap it replays.  The bounds are generous (a busy machine
runs the suite): "fails fast" is under 2 s where retries used to take 31 s,
"Ctrl-C stops" is under 2 s where the queue used to drain for minutes.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_runner import run_cli

from isicarchive import ArchiveUnavailableError, IsicApi, NotFoundError, QueryError
from isicarchive.empty import EmptySelectionWarning
from isicarchive.testing import ArchiveConfig, LocalArchive

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    # a process of its own per command, forked from one that has imported the package (tests/cli_runner.py)
    return run_cli(*args, timeout=timeout, **kw)  # type: ignore[arg-type]


def ends_cleanly(done: subprocess.CompletedProcess[str], code: int) -> None:
    """The documented exit code, one line on stderr, no traceback."""
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "Error:" not in done.stderr.split("isicarchive: ", 1)[0], done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.fixture(scope="module")
def archive() -> Iterator[LocalArchive]:
    with LocalArchive(seed=0, config=ArchiveConfig(images=400)) as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------ 1. defaults
def test_python_311_is_the_floor_and_torch_is_in_no_default_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.11"
    assert project["tool"]["mypy"]["python_version"] == "3.11"
    assert project["tool"]["ruff"]["target-version"] == "py311"
    extras = project["project"]["optional-dependencies"]

    def resolved(name: str) -> set[str]:
        found: set[str] = set()
        for requirement in extras[name]:
            nested = re.match(r"isicarchive\[(.*)\]", requirement)
            if nested:
                for inner in nested.group(1).split(","):
                    found |= resolved(inner.strip())
            else:
                found.add(re.split(r"[<>=\[; ]", requirement, maxsplit=1)[0].lower())
        return found

    assert "torch" not in {re.split(r"[<>=\[; ]", d, maxsplit=1)[0] for d in project["project"]["dependencies"]}
    for name in ("all", "test", "dev"):
        assert "torch" not in resolved(name), name
    users = set(extras) - {"all", "torch", "docs", "test", "dev"}
    assert {dep for name in users for dep in resolved(name)} <= resolved("all")
    # one table in the README and on the docs' first page names every extra
    for page in (ROOT / "README.md", ROOT / "docs" / "index.md"):
        text = page.read_text()
        assert "3.11" in text
        for name in extras:
            assert re.search(rf"^\| [^|]*`{name}`[^|]*\|", text, re.M), (page.name, name)


def test_one_default_api_v2_also_for_the_local_archive(archive: LocalArchive) -> None:
    api = IsicApi(hostname=archive.url, progress=False)
    assert api.api_version == 2 and api.base_url == archive.url + "/api/v2"
    assert len(api.search_images('diagnosis_3:"Melanoma Invasive" AND age_approx:[50 TO 70]')) > 0


def test_a_pasted_api_address_and_a_host_without_scheme(archive: LocalArchive) -> None:
    pasted = IsicApi(hostname=archive.v2_url, progress=False)  # as `isicarchive serve` prints it
    assert pasted.base_url == archive.url + "/api/v2" and pasted.api_version == 2
    legacy = IsicApi(hostname=archive.v1_url + "/", progress=False)
    assert legacy.base_url == archive.url + "/api/v1" and legacy.api_version == 1
    bare = IsicApi(hostname=archive.url.removeprefix("http://"), progress=False)  # 127.0.0.1:PORT
    assert bare.base_url == archive.url + "/api/v2"
    assert next(iter(bare.image_list({"limit": 1})))["isic_id"]
    assert IsicApi(hostname="isic-archive.com", progress=False).base_url.startswith("https://")


class _LegacyOnly(http.server.BaseHTTPRequestHandler):
    """A mirror of the legacy API only: 404 for everything under /api/v2."""

    asked: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.asked.append(self.path)
        status, body = (200, b"[]") if self.path.startswith("/api/v1/") else (404, b'{"detail": "Not Found"}')
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_host_that_serves_only_v1_is_spoken_to_in_v1() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LegacyOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        api = IsicApi(hostname=url, progress=False)
        assert api.api_version == 1 and api.base_url == url + "/api/v1"
        assert [p for p in _LegacyOnly.asked if p.startswith("/api/v2")] == ["/api/v2/images/?limit=1"]
        IsicApi(hostname=url, progress=False)  # asked once per host
        assert len([p for p in _LegacyOnly.asked if p.startswith("/api/v2")]) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_the_cli_defaults_to_v2_and_names_a_missing_extra_in_one_line(archive: LocalArchive, tmp_path: Path) -> None:
    done = cli("--host", archive.url, "--json", "images", "search", "-s", "diagnosis_1:Malignant")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["count"] > 0
    # a missing extra: pyarrow made unimportable, an archive on disk opened (the `disk` extra)
    (tmp_path / "folder").mkdir()
    code = ("import sys; sys.modules['pyarrow'] = None; from isicarchive.cli import main; "
            f"sys.exit(main(['--host', {(tmp_path / 'folder').as_uri()!r}, 'images', 'search', '-s', '']))")
    blocked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    ends_cleanly(blocked, 1)
    assert "isicarchive[disk]" in blocked.stderr


# ----------------------------------------------------- 2. network errors
def test_a_refused_connection_fails_fast_and_says_so() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(ArchiveUnavailableError) as caught:
        IsicApi(hostname=f"http://127.0.0.1:{port}", progress=False).image("ISIC_0000000")
    took = time.monotonic() - started
    assert took < 2.0, took
    assert f"connection refused by 127.0.0.1:{port}" in str(caught.value)
    assert "rate-limit" not in str(caught.value)


def test_a_name_that_does_not_resolve_fails_fast_and_says_so() -> None:
    started = time.monotonic()
    with pytest.raises(ArchiveUnavailableError) as caught:
        IsicApi(hostname="https://isic-archive.invalid", api_version=2, progress=False).image("ISIC_0000000")
    assert time.monotonic() - started < 5.0  # one resolver query, not 31 s of retries
    assert "cannot resolve isic-archive.invalid" in str(caught.value)
    assert "rate-limit" not in str(caught.value)


def test_rate_limiting_is_named_only_after_a_429_or_503() -> None:
    with LocalArchive(seed=1, config=ArchiveConfig(images=20)) as server:
        server.faults.add("status", r"/api/v2/images/", status=503)
        api = IsicApi(hostname=server.url, api_version=2, progress=False, retries=1, backoff=0.001)
        with pytest.raises(ArchiveUnavailableError, match="rate-limiting"):
            api.image("ISIC_0000000")
        server.faults.clear()
        server.faults.add("status", r"/api/v2/images/", status=500)
        with pytest.raises(ArchiveUnavailableError) as caught:
            api.image("ISIC_0000001")
        assert "rate-limit" not in str(caught.value) and "HTTP 500" in str(caught.value)


def test_https_to_a_plain_http_server_says_what_to_write(archive: LocalArchive) -> None:
    https = archive.url.replace("http://", "https://")
    with pytest.raises(ArchiveUnavailableError, match=r"write http://127\.0\.0\.1:PORT"):
        IsicApi(hostname=https, api_version=2, progress=False, retries=0).image("ISIC_0000000")


# ---------------------------------------------------------------- 3. Ctrl-C
def _files(folder: Path) -> int:
    return len(list(folder.glob("ISIC_*.jpg"))) if folder.exists() else 0


def _interruptible(command: list[str]) -> subprocess.Popen[str]:
    """``command`` started with SIGINT at its default, as a terminal starts it.

    A shell that starts the suite in the background without job control (``pytest &`` in a script) has it
    ignore SIGINT, which a child inherits and Python then keeps (the Ctrl-C below never reached the command:
    60 s, then a failure); a handled signal is reset to its default in a new program.
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupt_when(proc: subprocess.Popen[str], ready: Callable[[], bool],
                    archive: LocalArchive) -> tuple[float, int, str, str]:
    """SIGINT once ``ready()``; (seconds until the process ended, requests the archive received after the
    signal, stdout, stderr).

    Before the signal the archive's answers slow to 1 KB/s (some 40 s an image): a client that let its transfers
    in flight finish would take that long to end, one that kept taking queued ones would keep asking the
    archive. Both tell on a loaded machine too, where a prompt exit alone has taken up to 7.5 s.
    """
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not ready():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    archive.bandwidth = 1024
    time.sleep(0.5)  # the transfers the workers start now trickle
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    proc.wait(timeout=60)
    took = time.monotonic() - sent
    archive.bandwidth = None
    asked_after = sum(1 for r in archive.requests(settle=0) if r.started > sent)
    stdout, stderr = proc.communicate(timeout=30)
    return took, asked_after, stdout, stderr


@pytest.mark.slow
def test_ctrl_c_stops_a_bulk_download_at_once_and_it_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # 80 images at 0.2 s latency, 4 workers: the interrupts come while most are still to fetch
    with LocalArchive(seed=3, config=ArchiveConfig(images=80), latency=0.2) as slow:
        names = [im["name"] for im in slow.data.visible_images(None)]
        command = [sys.executable, "-m", "isicarchive.cli", "--host", slow.url, "--quiet", "images", "download",
                   *names, "--out", str(out), "--workers", "4"]
        proc = _interruptible(command)
        took, asked_after, _, stderr = _interrupt_when(proc, lambda: _files(out) >= 5, slow)
        # transfers in flight stopped (else 40 s), queued ones cancelled (at most the 4 workers' last requests)
        assert took < 20 and asked_after <= 4, (took, asked_after)
        assert proc.returncode == 130 and stderr.strip() == "interrupted", stderr
        kept = _files(out)
        assert 5 <= kept < len(names)
        assert not (out / ".isicarchive-locks").exists()
        slow.latency = 0.0  # the resume has no interrupt to wait for (at 0.2 s it took 3 s)
        # (no signal: forked from the runner's parent, tests/cli_runner.py, like the other commands' tests)
        again = cli(*command[3:6], "--json", *command[6:], timeout=300)
        slow.latency = 0.2
        assert again.returncode == 0, again.stderr
        summary = json.loads(again.stdout)
        assert summary["skipped"] >= kept and summary["downloaded"] + summary["skipped"] == len(names)
        assert _files(out) == len(names) and not list(out.glob(".*.part"))
        assert (out / "attribution.txt").read_text().endswith("\n")
        # the same from Python: KeyboardInterrupt at once, no threading traceback at exit
        script = (f"import time\nfrom isicarchive import IsicApi\n"
                  f"api = IsicApi(hostname={slow.url!r}, progress=False, workers=4)\n"
                  f"try:\n    api.download_images({names!r}, folder={str(tmp_path / 'py')!r})\n"
                  f"except KeyboardInterrupt:\n    print('stopped', flush=True)\n")
        proc = _interruptible([sys.executable, "-c", script])
        took, asked_after, stdout, stderr = _interrupt_when(proc, lambda: _files(tmp_path / "py") >= 3, slow)
        assert took < 20 and asked_after <= 4, (took, asked_after)
        assert proc.returncode == 0 and "stopped" in stdout, stderr
        assert "Traceback" not in stderr, stderr


# ------------------------------------------------------------------- 6. CLI
def test_a_closed_pipe_ends_quietly(archive: LocalArchive) -> None:
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "isicarchive.cli", "--host", archive.url, "--api", "v1",
                             "--json", "images", "select", "meta.clinical.age_approx", ">=", "0"],
                            stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        reader.read(10)  # `| head -c 10`
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "BrokenPipe" not in stderr and "Traceback" not in stderr, stderr


def test_cli_errors_name_flags_and_end_without_a_traceback(archive: LocalArchive, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    unusable = cli("--host", archive.url, "--cache-folder", str(blocker / "cache"), "images", "select",
                   "meta.clinical.diagnosis", "==", "melanoma")
    ends_cleanly(unusable, 1)
    assert "--cache-folder" in unusable.stderr and "cache_folder" not in unusable.stderr
    refused = cli("--host", archive.url, "images", "download", "ISIC_0000000", "--out", "/sys/isicarchive-test")
    ends_cleanly(refused, 1)
    assert "/sys/isicarchive-test" in refused.stderr
    not_a_folder = cli("--host", archive.url, "images", "download", "ISIC_0000000", "--out", str(blocker / "x"))
    ends_cleanly(not_a_folder, 1)
    nowhere = cli("--host", f"127.0.0.1:{free_port()}", "images", "search", "-s", "")
    ends_cleanly(nowhere, 1)
    assert "connection refused" in nowhere.stderr


# ------------------------------------------------ 4. no silently empty selection
@pytest.mark.parametrize(("criterion", "named"), [
    (["meta.clinical.diagnossis", "==", "melanoma"], "'meta.clinical.diagnosis'"),   # a field no record has
    (["meta.clinical.age_approx", ">=", "50"], "write 50 without quotes"),            # a value of the wrong type
    (["meta.clinical.diagnosis", "==", "melanomma"], "'melanoma'"),                   # a value that never occurs
    (["metadata.clinical.diagnosis_1", "==", "malignant"], "'Malignant'"),            # a case variant (v2 names)
])
def test_an_empty_selection_says_why_with_close_matches(archive: LocalArchive, criterion: list, named: str) -> None:
    api = IsicApi(hostname=archive.url, api_version=1 if criterion[0].startswith("meta.") else 2, progress=False)
    with pytest.warns(EmptySelectionWarning, match="close matches|without quotes") as caught:
        assert len(api.select_images(criterion)) == 0  # the original semantics: still empty
    assert named in str(caught[0].message)
    with pytest.raises(QueryError, match=re.escape(named)):
        api.select_images(criterion, strict=True)
    api.strict_selection = True
    with pytest.raises(QueryError):
        api.select_images(criterion)


def test_empty_by_design_is_not_a_mistake(archive: LocalArchive) -> None:
    api = IsicApi(hostname=archive.url, api_version=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(api.select_images([["meta.clinical.diagnosis", "==", "melanoma"],
                                      ["meta.clinical.diagnosis", "==", "nevus"]])) == 0
        assert len(api.select_images(["meta.clinical.nothing_here", "is None", None])) > 0  # missing is None


def test_a_v2_search_in_the_wrong_case_names_the_right_one(archive: LocalArchive) -> None:
    api = IsicApi(hostname=archive.url, progress=False)
    with pytest.warns(EmptySelectionWarning, match="diagnosis_1:Malignant does"):
        assert len(api.search_images("diagnosis_1:malignant AND age_approx:[50 TO *]")) == 0
    with pytest.raises(QueryError, match='diagnosis_3:"Melanoma Invasive"'):
        api.search_images('diagnosis_3:"melanoma invasive"', strict=True)
    done = cli("--host", archive.url, "images", "search", "-s", "diagnosis_1:malignant")
    assert done.returncode == 0 and "isicarchive: warning: the search found nothing" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = cli("--host", archive.url, "images", "search", "--strict", "-s", "diagnosis_1:malignant")
    assert done.returncode == 2 and "isicarchive: the search found nothing" in done.stderr, done.stderr
    assert "diagnosis_1:Malignant" in done.stderr and "Traceback" not in done.stderr


def test_stratify_errors_exactly_as_by_does(archive: LocalArchive) -> None:
    api = IsicApi(hostname=archive.url, progress=False)
    selection = api.select_images(["metadata.clinical.age_approx", ">=", 0])
    with pytest.raises(QueryError, match="'diagnossis' to stratify by.*close matches: 'diagnosis'"):
        selection.split({"train": 0.8, "test": 0.2}, stratify="diagnossis")
    with pytest.raises(QueryError, match="'patiant_id' to group by.*close matches: 'patient_id'"):
        selection.split({"train": 0.8, "test": 0.2}, by="patiant_id")
    parts = selection.split({"train": 0.8, "test": 0.2}, stratify="diagnosis_1")
    assert sum(len(p) for p in parts.values()) == len(selection)


# ------------------------------------------- 5. withdrawn ids, DataFrames on v2
def test_withdrawn_ids_can_be_left_out_and_are_reported(archive: LocalArchive, tmp_path: Path) -> None:
    api = IsicApi(hostname=archive.url, progress=False)
    ids = ["ISIC_0000000", "ISIC_9999998", "ISIC_0000001", "ISIC_9999999"]
    with pytest.raises(NotFoundError, match="ISIC_9999998, ISIC_9999999.*missing='skip'"):
        api.download_images(ids, folder=tmp_path / "strict")
    assert not (tmp_path / "strict").exists()  # nothing written
    result = api.download_images(ids, folder=tmp_path / "rest", missing="skip")
    assert result.ok and result.missing == ["ISIC_9999998", "ISIC_9999999"]
    assert sorted(p.name for p in (tmp_path / "rest").glob("ISIC_*")) == ["ISIC_0000000.jpg", "ISIC_0000001.jpg"]
    done = cli("--host", archive.url, "--json", "images", "download", *ids, "--out", str(tmp_path / "cli"),
               "--skip-missing")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["missing"] == ["ISIC_9999998", "ISIC_9999999"]
    assert "2 images not found" in done.stderr and "Traceback" not in done.stderr
    refused = cli("--host", archive.url, "images", "download", *ids, "--out", str(tmp_path / "cli2"))
    ends_cleanly(refused, 4)
    assert "--skip-missing" in refused.stderr


def test_a_v2_dataframe_has_todays_columns(archive: LocalArchive) -> None:
    pytest.importorskip("pandas")
    api = IsicApi(hostname=archive.url, progress=False)
    frame = api.search_images("diagnosis_1:Malignant").to_dataframe()
    for column in ("patient_id", "lesion_id", *(f"diagnosis_{n}" for n in range(1, 6)), "image_type",
                   "pixels_x", "pixels_y"):
        assert column in frame.columns, column
    assert set(frame["diagnosis_1"]) == {"Malignant"} and frame["patient_id"].notna().any()
    legacy = IsicApi(hostname=archive.url, api_version=1, progress=False)
    assert "meta.clinical.diagnosis" in legacy.select_images(["meta.clinical.age_approx", ">=", 0]).to_dataframe()


# ---------------------------------------------------------------- 6. more CLI
def test_metadata_download_and_study_show(archive: LocalArchive, tmp_path: Path) -> None:
    done = cli("--host", archive.url, "metadata", "download", "-s", "diagnosis_1:Malignant", "-o",
               str(tmp_path / "m.csv"))
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "m.csv").read_text().splitlines()
    expected = IsicApi(hostname=archive.url, progress=False).search_images("diagnosis_1:Malignant")
    assert rows[0].startswith("isic_id,") and sorted(r.split(",")[0] for r in rows[1:]) == sorted(expected)
    study = archive.data.studies[0]
    annotated = [a for a in archive.data.annotations if a["studyId"] == study["_id"]]
    shown = cli("--host", archive.url, "--api", "v1", "--json", "study", "show", study["name"])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["annotations"] == len(annotated) > 0
    listed = repr(IsicApi(hostname=archive.url, api_version=1, progress=False).study_list())
    assert re.fullmatch(r"<\d+ stud(y|ies): .*>", listed) and repr(study["name"]) in listed, listed


def test_the_cli_caches_in_the_users_cache_folder(archive: LocalArchive, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ISICARCHIVE_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    done = cli("--host", archive.url, "images", "select", "meta.clinical.diagnosis", "==", "melanoma", env=env)
    assert done.returncode == 0, done.stderr
    folders = list((tmp_path / "xdg" / "isicarchive").iterdir())
    assert [f.name for f in folders] == [f"127.0.0.1_{archive.port}-v2"]
    assert list(folders[0].rglob("imcache_*.json.gz"))


# ------------------------------------------------------- 7. the local archive
def test_the_default_archive_has_every_diagnosis_level_and_the_readmes_examples_select_something() -> None:
    with LocalArchive(seed=0) as default:
        api = IsicApi(hostname=default.url, progress=False)
        records = api.cache_images().values()
        levels = {n: {r["metadata"]["clinical"].get(f"diagnosis_{n}") for r in records} - {None} for n in (1, 2, 3, 4)}
        assert levels[1] == {"Benign", "Malignant", "Indeterminate"}
        assert "Melanoma Invasive" in levels[3] and "Melanoma in situ" in levels[3] and levels[4]
        for query in ('diagnosis_3:"Melanoma Invasive" AND age_approx:[50 TO 70]',
                      "diagnosis_1:Malignant AND age_approx:[50 TO *] AND -sex:male", "diagnosis_1:Malignant"):
            assert len(api.search_images(query)) > 0, query
        assert len(api.select_images([["meta.clinical.diagnosis", "==", "melanoma"],
                                      ["meta.clinical.age_approx", ">=", 50]])) > 0


def test_a_script_with_a_fixed_cache_folder_runs_twice(tmp_path: Path) -> None:
    script = ("from isicarchive import IsicApi\nfrom isicarchive.testing import LocalArchive\n"
              "with LocalArchive(seed=4) as archive:\n"
              f"    api = IsicApi(hostname=archive.url, cache_folder={str(tmp_path / 'cache')!r}, progress=False)\n"
              "    print(archive.url, len(api.cache_images()))\n")
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
            for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    assert runs[0].stdout == runs[1].stdout  # the same address, the same records
