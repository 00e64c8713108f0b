"""The documentation: every ```python block of every page runs, and the site builds strictly."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tool_venvs import TEST_CACHE

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# the pages with code to run (the others started a local archive for nothing)
PAGES = sorted(p for p in DOCS.glob("*.md")
               if p.name not in ("reliability.md", "changelog.md") and BLOCK.search(p.read_text()))
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


# `mkdocs build`, with the site's Jinja templates (the theme's, mkdocstrings') compiled once into the test cache
# rather than on every run (a second of the build's six). An entry is found by the template's name and source, not
# its path, so that a new clone's new virtualenv finds it too; Jinja compares the source again when it reads one.
BUILD = """
import sys
import jinja2
class Cache(jinja2.FileSystemBytecodeCache):
    def get_bucket(self, environment, name, filename, source):
        return super().get_bucket(environment, name, self.get_source_checksum(source), source)
cache = Cache(sys.argv.pop(1))
plain_init = jinja2.Environment.__init__
def init(self, *args, **kwargs):
    plain_init(self, *args, **kwargs)
    self.bytecode_cache = cache
jinja2.Environment.__init__ = init
from mkdocs.__main__ import cli
cli(prog_name="mkdocs")
"""


def test_site_builds_strictly(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    templates = TEST_CACHE / "jinja"
    templates.mkdir(parents=True, exist_ok=True)
    build = [sys.executable, "-c", BUILD, str(templates), "build", "--strict", "-d", str(tmp_path / "site")]
    done = subprocess.run(build, capture_output=True, text=True, cwd=DOCS.parent,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "reference" / "index.html").exists()
