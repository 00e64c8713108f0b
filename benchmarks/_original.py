"""The original package (isicarchive 0.4.11) in an isolated virtualenv, for baselines.

It only imports with old pins (numpy 1.23.5, numba 0.58.1, llvmlite 0.41.1,
scipy<1.12), so it lives in ``benchmarks/.venv-original`` and is driven
through subprocesses.  Nothing of it is copied into this repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-original"
PINS = ["isicarchive==0.4.11", "numpy==1.23.5", "numba==0.58.1", "llvmlite==0.41.1", "scipy<1.12"]


def python() -> Path | None:
    """The original's interpreter, installing it on first use; None when the package index is unreachable."""
    exe = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    marker = VENV / ".ready"
    if marker.exists():
        return exe
    print(f"[baseline] creating {VENV} with {' '.join(PINS)} (first run only)...", file=sys.stderr)
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    done = subprocess.run([str(exe), "-m", "pip", "install", "-q", *PINS], capture_output=True, text=True)
    if done.returncode != 0:
        print("[baseline] could not install the original package (offline?); baseline skipped:\n"
              + done.stderr[-600:], file=sys.stderr)
        return None
    marker.write_text("ok")
    return exe


def run(code: str, *args: str, timeout: float = 3600) -> str:
    """Run ``code`` in the original's interpreter; returns stdout."""
    exe = python()
    if exe is None:
        raise RuntimeError("baseline unavailable")
    # run outside the repository so that our own package does not shadow the original
    done = subprocess.run([str(exe), "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(VENV))
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return done.stdout
