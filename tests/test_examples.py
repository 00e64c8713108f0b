"""Every example runs against a local archive, so that none of them can rot."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ["find_melanomas.py", "study_overlays.py", "export_metadata.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_script(script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    # run as `python examples/<script> --out <tmp>` runs it (its folder first on the path, __name__ "__main__"),
    # in this process: an interpreter of its own imported the package, numpy and requests again for each script
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script), "--out", str(tmp_path)])
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ISICARCHIVE_HOST", "")
    try:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    except SystemExit as exit:
        assert exit.code in (None, 0), capsys.readouterr().err
    assert capsys.readouterr().out.strip()
    assert any(tmp_path.rglob("*.png")) or any(tmp_path.rglob("*.csv"))


def test_pipeline_test_example_passes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # as in the user's own project: without this project's addopts (three xdist workers for three tests), its
    # conftest (not on the example's path) and the plugins our test extra installs (hypothesis, xdist, ...), in a
    # pytest session of its own in this process (an interpreter of its own cost 0.9 s of CPU)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delitem(sys.modules, "test_my_pipeline", raising=False)
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-o", "addopts=", str(EXAMPLES / "test_my_pipeline.py")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 passed" in out


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
