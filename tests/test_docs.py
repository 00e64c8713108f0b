"""The documentation: every ```python block of every page runs, and the site builds strictly."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.glob("*.md") if p.name not in ("reliability.md", "changelog.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SETUP = BLOCK.findall((DOCS / "index.md").read_text())[0]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_code_runs(page: Path) -> None:
    blocks = BLOCK.findall(page.read_text())
    if page.name == "index.md":
        blocks = blocks[1:]
    namespace: dict = {"__name__": "docs"}
    exec(compile(SETUP, f"{page.name}:setup", "exec"), namespace)
    try:
        for number, block in enumerate(blocks, 1):
            exec(compile(block, f"{page.name}:block{number}", "exec"), namespace)
    finally:
        namespace["archive"].stop()


def test_site_builds_strictly(tmp_path: Path) -> None:
    if shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists():
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    done = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], capture_output=True,
                          text=True, cwd=DOCS.parent, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "reference" / "index.html").exists()
