"""Every CLI command, run as a subprocess against a local archive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cli_runner import run_cli

from isicarchive.testing import LocalArchive

KEYRING = Path(__file__).parent / "file_keyring.py"


def cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    # a process of its own per command, forked from one that has imported the package (tests/cli_runner.py)
    return run_cli(*args, env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def server() -> LocalArchive:
    with LocalArchive(seed=61) as archive:
        yield archive


def test_forked_commands_answer_as_a_fresh_interpreter_does(server: LocalArchive, tmp_path: Path) -> None:
    # the runner the other tests use (tests/cli_runner.py) against `python -m isicarchive.cli` itself: the same
    # output, errors and exit codes, the environment and working folder of the call, PYTHONPATH on sys.path
    ring = {"PYTHON_KEYRING_BACKEND": "file_keyring.FileKeyring", "PYTHONPATH": str(KEYRING.parent),
            "ISICARCHIVE_TEST_KEYRING": str(tmp_path / "ring.json"), "ISICARCHIVE_PASSWORD": "wrong"}
    for args, env in ((["images", "select", "meta.clinical.diagnosis", "==", "melanoma"], {}),
                      (["images", "select", "meta.x", "like", "1"], {}),
                      (["--user", "alice", "login"], ring)):
        command = ["--host", server.url, "--api", "v1", *args]
        fresh = subprocess.run([sys.executable, "-m", "isicarchive.cli", *command], capture_output=True, text=True,
                               env={**os.environ, **env}, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
        forked = cli(*command, env=env, cwd=tmp_path)
        assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
        assert fresh.stdout or fresh.stderr
    assert {cli("--version").returncode, cli().returncode} == {0, 2}


def test_help_lists_commands_and_examples() -> None:
    done = cli("--help")
    assert done.returncode == 0
    for word in ("demo", "serve", "login", "images", "study", "dataset", "cache", "examples:", "exit codes"):
        assert word in done.stdout
    for command in (["demo"], ["serve"], ["images", "select"], ["images", "search"], ["images", "download"],
                    ["study"], ["dataset"], ["cache"], ["login"], ["logout"]):
        sub = cli(*command, "--help")
        assert sub.returncode == 0 and "example" in sub.stdout, command
    assert cli("--version").stdout.startswith("isicarchive ")
    assert cli().returncode == 2


def test_demo(tmp_path: Path) -> None:
    started = time.monotonic()
    done = cli("demo", "--out", str(tmp_path / "demo"), "--images", "200")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 60
    assert "Overlay" in done.stdout and "Done in" in done.stdout
    overlay = next((tmp_path / "demo").glob("*_overlay.png"))
    assert overlay.stat().st_size > 1000


def test_serve_answers_and_stops() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "isicarchive.cli", "serve", "--port", "0", "--images", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        assert "Local ISIC archive at http://127.0.0.1:" in first
        url = first.split(" at ")[1].split()[0]
        import requests

        assert requests.get(url + "/api/v1/image", params={"limit": 1}, timeout=10).status_code == 200
        assert requests.get(url + "/api/v2/images/", timeout=10).json()["count"] == 15
    finally:
        proc.terminate()
        proc.wait(10)


def test_images_select_text_and_json(server: LocalArchive) -> None:
    done = cli("--host", server.url, "--api", "v1", "--quiet", "images", "select", "meta.clinical.diagnosis", "==",
               "melanoma")
    assert done.returncode == 0, done.stderr
    expected = sorted(im["name"] for im in server.data.visible_images(None)
                      if im["meta"]["clinical"].get("diagnosis") == "melanoma")
    assert sorted(done.stdout.split("\n")[:-2]) == expected
    as_json = cli("--host", server.url, "--api", "v1", "--json", "images", "select", "meta.acquisition.pixelsX", ">=",
                  "100", "meta.clinical.age_approx", "is None")
    payload = json.loads(as_json.stdout)
    assert payload["count"] == len(payload["ids"]) == sum(
        1 for im in server.data.visible_images(None) if im["meta"]["clinical"].get("age_approx") is None)


def test_bad_criteria_and_unknown_things_have_exit_codes(server: LocalArchive) -> None:
    bad = cli("--host", server.url, "--api", "v1", "images", "select", "meta.x", "like", "1")
    assert bad.returncode == 2 and "unknown operator" in bad.stderr
    missing = cli("--host", server.url, "--api", "v1", "study", "show", "No such study")
    assert missing.returncode == 4 and "No such study" in missing.stderr


def test_images_download_to_folder(server: LocalArchive, tmp_path: Path) -> None:
    names = [im["name"] for im in server.data.visible_images(None)[:3]]
    done = cli("--host", server.url, "--api", "v1", "--json", "images", "download", *names, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["downloaded"] == 3
    assert sorted(p.stem for p in tmp_path.glob("ISIC_*.jpg")) == names
    again = json.loads(cli("--host", server.url, "--api", "v1", "--json", "images", "download", *names, "--out",
                           str(tmp_path)).stdout)
    assert again["skipped"] == 3 and again["downloaded"] == 0


def test_v2_images_search_and_download_by_query(server: LocalArchive, tmp_path: Path) -> None:
    query = "age_approx:[50 TO 70]"
    expected = sorted(requests.get(f"{server.v2_url}/images/search/", params={"query": query, "limit": 100},
                                   timeout=10).json()["results"], key=lambda r: r["isic_id"])
    assert expected
    v2 = ["--host", server.url, "--api", "v2"]
    found = cli(*v2, "--json", "images", "search", "-s", query)
    assert found.returncode == 0, found.stderr
    assert sorted(json.loads(found.stdout)["ids"]) == [r["isic_id"] for r in expected]
    limited = json.loads(cli(*v2, "--json", "images", "search", "-s", query, "-l", "2").stdout)
    assert limited["count"] == 2
    done = cli(*v2, "--json", "images", "download", "-s", query, "-l", "3", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["downloaded"] == 3 and len(list(tmp_path.glob("ISIC_*.jpg"))) == 3
    bad = cli(*v2, "images", "search", "-s", "age_approx:old")
    assert bad.returncode == 2 and "age_approx" in bad.stderr
    v1 = cli("--host", server.url, "--api", "v1", "images", "search", "-s", query)
    assert v1.returncode == 2 and "--api v2" in v1.stderr


def test_study_show_download_annotations_and_dataset(server: LocalArchive, tmp_path: Path) -> None:
    name = "ISIC Annotation Study 0"
    shown = json.loads(cli("--host", server.url, "--api", "v1", "--json", "study", "show", name).stdout)
    assert shown["name"] == name and shown["features"]
    cache = ["--cache-folder", str(tmp_path / "cache")]
    got = json.loads(cli("--host", server.url, "--api", "v1", "--json", *cache, "study", "download", name).stdout)
    assert got["downloaded"] == 2 * len(shown["images"])
    annotations = json.loads(cli("--host", server.url, "--api", "v1", "--json", *cache, "study", "annotations",
                                 name).stdout)
    assert annotations and {"id", "image", "user", "state", "features"} <= set(annotations[0])
    listed = json.loads(cli("--host", server.url, "--api", "v1", "--json", "dataset", "list").stdout)
    assert {d["name"] for d in listed} == {d["name"] for d in server.data.datasets if d["public"]}
    one = json.loads(cli("--host", server.url, "--api", "v1", "--json", "dataset", "show", listed[0]["name"]).stdout)
    assert one["name"] == listed[0]["name"] and one["access_list"] is None


def test_cache_info_verify_clean(server: LocalArchive, tmp_path: Path) -> None:
    cache = ["--cache-folder", str(tmp_path)]
    cli("--host", server.url, "--api", "v1", *cache, "--quiet", "study", "download", "ISIC Annotation Study 0")
    info = json.loads(cli("--json", *cache, "cache", "info").stdout)
    assert info["kinds"]["image"]["files"] > 0 and info["kinds"]["spimg"]["files"] > 0
    assert json.loads(cli("--json", *cache, "cache", "verify").stdout)["corrupt_removed"] == []
    victim = next(p for p in tmp_path.glob("?/image_*") if not p.name.endswith(".sha256"))
    victim.write_bytes(b"\xff\xd8broken")
    (tmp_path / "0" / ".leftover.tmp").write_bytes(b"x")
    verify = cli("--json", *cache, "cache", "verify")
    assert verify.returncode == 1 and json.loads(verify.stdout)["corrupt_removed"] == [str(victim)]
    cleaned = json.loads(cli("--json", *cache, "cache", "clean").stdout)
    assert cleaned["removed"] >= 1 and not (tmp_path / "0" / ".leftover.tmp").exists()
    assert cli(*cache, "cache", "clean", "--all").returncode == 0
    assert json.loads(cli("--json", *cache, "cache", "info").stdout)["files"] == 0


def test_login_and_logout_use_the_keyring(server: LocalArchive, tmp_path: Path) -> None:
    env = {"PYTHON_KEYRING_BACKEND": "file_keyring.FileKeyring", "PYTHONPATH": str(KEYRING.parent),
           "ISICARCHIVE_TEST_KEYRING": str(tmp_path / "ring.json"),
           "ISICARCHIVE_PASSWORD": server.credentials["alice"]}
    done = cli("--host", server.url, "--api", "v1", "--user", "alice", "login", env=env)
    assert done.returncode == 0, done.stderr
    assert server.credentials["alice"] not in done.stdout + done.stderr
    stored = json.loads((tmp_path / "ring.json").read_text())
    assert list(stored.values()) == [server.credentials["alice"]]
    # later commands find the password in the keyring
    env.pop("ISICARCHIVE_PASSWORD")
    private = next(d["name"] for d in server.data.datasets if not d["public"])
    shown = cli("--host", server.url, "--api", "v1", "--user", "alice", "--json", "dataset", "show", private, env=env)
    assert shown.returncode == 0, shown.stderr
    removed = cli("--host", server.url, "--api", "v1", "--user", "alice", "logout", env=env)
    assert removed.stdout.startswith("Password or token removed")
    refused = cli("--host", server.url, "--api", "v1", "--user", "alice", "dataset", "show", private, env=env)
    assert refused.returncode == 3 and "not interactive" in refused.stderr
