"""Virtualenvs of the programs that judge the local archive (the official CLI, the original package,
isic-metadata), made once from the package index and kept in the test cache.

``ISICARCHIVE_TEST_CACHE`` moves the cache (default ``~/.cache/isicarchive-tests``).  A venv that
could not be made (no package index, no suitable Python) gives None, and its test skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TEST_CACHE = Path(os.environ.get("ISICARCHIVE_TEST_CACHE", Path.home() / ".cache" / "isicarchive-tests"))
#: pyenv shims answer for these versions only when asked to
PYENV = {**os.environ, "PYENV_VERSION": "3.13.0:3.12.1"}


def python_at_least(minimum: tuple[int, int]) -> str | None:
    """This interpreter when it is new enough, else a python3.13 or python3.12 on the PATH."""
    if sys.version_info >= minimum:
        return sys.executable
    for name in ("python3.13", "python3.12"):
        exe = shutil.which(name)
        check = f"import sys; assert sys.version_info >= {minimum!r}"
        if exe and subprocess.run([exe, "-c", check], env=PYENV, capture_output=True).returncode == 0:
            return exe
    return None


def tool_venv(name: str, packages: list[str], minimum: tuple[int, int] = (3, 10)) -> Path | None:
    """The python of ``TEST_CACHE/name`` with ``packages`` installed (made on first use), or None."""
    folder = TEST_CACHE / name
    python = folder / "bin" / "python"
    ready = folder / ".ready"
    if ready.exists():
        return python
    base = python_at_least(minimum)
    if base is None:
        return None
    made = subprocess.run([base, "-m", "venv", "--clear", str(folder)], env=PYENV, capture_output=True)
    if made.returncode != 0 or subprocess.run([str(python), "-m", "pip", "install", "-q", *packages],
                                              capture_output=True, timeout=900).returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    ready.write_text("ok")
    return python
