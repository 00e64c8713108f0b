"""Progress in notebooks: tqdm's widget where ipywidgets is installed, its text bar otherwise, never a warning."""

from __future__ import annotations

import subprocess
import sys

PROBE = r"""
import sys, types, warnings
sys.modules["ipykernel"] = types.ModuleType("ipykernel")  # as inside a Jupyter kernel
if sys.argv[1] == "no-widgets":
    sys.modules["ipywidgets"] = None  # not installed
warnings.simplefilter("error")
from isicarchive.progress import _bar_class, progress
if sys.argv[1] == "no-widgets":  # (a widget needs a real kernel to be drawn: only its choice is checked)
    bar = progress(10, "Records", "record")
    bar.update(10)
    bar.close()
print(_bar_class().__module__)
"""


def test_a_notebook_without_ipywidgets_gets_the_text_bar_and_no_warning() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, "no-widgets"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tqdm.std" and "IProgress" not in done.stderr


def test_a_notebook_with_ipywidgets_gets_the_widget() -> None:
    import pytest

    pytest.importorskip("ipywidgets")
    done = subprocess.run([sys.executable, "-c", PROBE, "widgets"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tqdm.notebook"
