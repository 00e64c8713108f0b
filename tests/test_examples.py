"""Every example runs against a local archive, so that none of them can rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ["find_melanomas.py", "study_overlays.py", "export_metadata.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_script(script: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=180, cwd=tmp_path, env={**os.environ, "ISICARCHIVE_HOST": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert any(tmp_path.rglob("*.png")) or any(tmp_path.rglob("*.csv"))


def test_pipeline_test_example_passes() -> None:
    # as in the user's own project: without this project's addopts (three xdist workers for three tests), and
    # without the plugins our test extra installs (hypothesis, xdist, ...: loading them cost half a second of CPU)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           str(EXAMPLES / "test_my_pipeline.py")], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


@pytest.mark.parametrize("notebook", sorted(p.name for p in EXAMPLES.glob("*.ipynb")))
def test_notebook_cells_run(notebook: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cells = json.loads((EXAMPLES / notebook).read_text())["cells"]
    namespace: dict = {"__name__": "__main__"}
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code
    for number, cell in enumerate(code, 1):
        source = "".join(cell["source"])
        exec(compile(source, f"{notebook}[{number}]", "exec"), namespace)
