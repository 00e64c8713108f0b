"""Static checks that keep the package's type hints honest."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from tool_venvs import TEST_CACHE

ROOT = Path(__file__).resolve().parents[1]


def _installed() -> str:
    """What mypy reads besides the checkout: this Python and the distributions installed beside it."""
    site = Path(sysconfig.get_path("purelib"))
    return "\n".join([sys.version, *sorted(p.name for p in site.glob("*.dist-info"))]) + "\n"


def _mypy_cache() -> Path:
    """This checkout's mypy cache in the test cache; a new checkout's starts as a copy of the one used last by
    an environment with the same packages (else of the one used last).

    mypy takes a cached module only where its source has the same hash (mtimes differ in a new clone), its
    data file is the one its meta names, and the interfaces it depends on are unchanged, so a copy made from
    another checkout (even one being written) re-checks what differs and all that depends on it: a new clone of
    the same code is checked in 1 s instead of 26. Another version of a package the code imports (a new
    virtualenv takes the newest dask) has mypy check that package and all that uses it again: 10 s.
    """
    folders = TEST_CACHE / "mypy"
    cache = folders / hashlib.sha256(str(ROOT).encode()).hexdigest()[:16]
    if not cache.exists():
        used = [p for p in folders.glob("*/last-run")]
        if used:
            installed = _installed()
            same = [p for p in used if p.read_text(errors="replace") == installed]
            seed = max(same or used, key=lambda p: p.stat().st_mtime).parent
            copy = folders / f".{cache.name}.{os.getpid()}"
            shutil.copytree(seed, copy, ignore=shutil.ignore_patterns("last-run"), dirs_exist_ok=True)
            try:
                copy.rename(cache)
            except OSError:  # another process of this checkout made it first
                shutil.rmtree(copy, ignore_errors=True)
    return cache


def test_package_type_checks() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    # incremental, with a cache of its own per checkout in the test cache: a warm run re-checks only the
    # modules that changed (and those that depend on them), as mypy's default mode does; a cold run checks all
    cache = _mypy_cache()
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (cache / "last-run").write_text(_installed())


def test_code_passes_the_linter() -> None:
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_import_and_cli_help_do_not_load_numpy_or_requests_and_the_session_not_numpy() -> None:
    # what makes `import isicarchive` and `isicarchive --help` quick (timings live in benchmarks/imports.py)
    import subprocess
    import sys

    probe = ("import sys, isicarchive, isicarchive.cli, contextlib, io\n"
             "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
             "    isicarchive.cli.main(['--help'])\n"
             "print(sorted(m for m in ('numpy', 'requests', 'pyparsing') if m in sys.modules))\n"
             "from isicarchive import IsicApi, Image\n"
             "print(IsicApi.__name__, Image.__name__, 'numpy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # numpy waits for the first array (a download or a metadata sync never needs one)
    assert done.stdout.splitlines() == ["[]", "IsicApi Image False"]
