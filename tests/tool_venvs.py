"""Virtualenvs of the programs that judge the local archive (the official CLI, the original package,
isic-metadata) and of torch, made once from the package index and kept in the test cache.

``ISICARCHIVE_TEST_CACHE`` moves the cache (default ``~/.cache/isicarchive-tests``).  A venv that
could not be made (no package index, no suitable Python) gives None, and its test skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
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


def link_installed_bytecode(prefix: Path) -> None:
    """Link the bytecode compiled next to this interpreter's installed modules (pip compiles what it installs,
    the standard library comes compiled) to where ``prefix`` (PYTHONPYCACHEPREFIX) has Python look for it.

    With a prefix, Python looks for bytecode there only. Once per folder (a marker in the prefix); modules
    already there are kept; Python checks each file against its source's size and mtime as usual, so a stale
    one is compiled again, never used. A prefix that cannot be written is left as it is (Python then compiles
    in memory, as before).
    """
    folders = {os.path.normpath(sysconfig.get_path(name)) for name in ("stdlib", "purelib", "platlib")}
    try:
        for folder in sorted(folders):
            _link_bytecode_of(folder, prefix)
    except OSError:
        return


def _link_bytecode_of(folder: str, prefix: Path) -> None:
    mirror = prefix / folder.lstrip(os.sep)
    marker = mirror / ".installed-bytecode-linked"
    if marker.exists():
        return
    for parent, _, files in os.walk(folder):
        if os.path.basename(parent) != "__pycache__":
            continue
        target = prefix / os.path.dirname(parent).lstrip(os.sep)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            if not name.endswith(".pyc"):
                continue
            try:
                os.link(os.path.join(parent, name), target / name)
            except FileExistsError:
                pass
            except OSError:  # another file system
                shutil.copy2(os.path.join(parent, name), target / name)
    mirror.mkdir(parents=True, exist_ok=True)
    marker.touch()


#: the package's own dependencies, for the virtualenvs that run this checkout (on PYTHONPATH) beside torch
PACKAGE_DEPENDENCIES = ["requests>=2.31", "urllib3>=2.0", "numpy>=1.24", "imageio>=2.31", "pillow>=10.0", "keyring>=24",
                        "tqdm>=4.66", "filelock>=3.12", "orjson>=3.9", "pyparsing>=3.1"]
#: torch (a CPU build where one lies on this disk) and webdataset: made by tests/test_torch.py on first use
TORCH_VENV = ("torch-2.13.0", ["torch==2.13.0", "webdataset>=1.0", *PACKAGE_DEPENDENCIES])
#: torchvision from the package index does not import beside the CPU torch 2.13.0; the pair that works here
#: (torch 2.14.1 + torchvision 0.29.1) is a CUDA build of 5.5 GB, too much to make inside a test run:
#: ``python benchmarks/training.py`` makes it
TORCHVISION_VENV = ("torchvision-0.29.1", ["torch==2.14.1", "torchvision==0.29.1", "webdataset>=1.0",
                                          *PACKAGE_DEPENDENCIES])


def torch_python() -> tuple[Path, bool] | None:
    """The python of a virtualenv with torch, and whether it has torchvision too; None where none can be made.

    The torchvision virtualenv where it has been made (one interpreter then checks torch and torchvision:
    importing torch costs some 3 s of CPU, and each interpreter pays it), else the torch one, made on first use.
    """
    with_torchvision = TEST_CACHE / TORCHVISION_VENV[0]
    if (with_torchvision / ".ready").exists():
        return with_torchvision / "bin" / "python", True
    python = tool_venv(*TORCH_VENV)
    return None if python is None else (python, False)
