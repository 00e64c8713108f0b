"""The documentation: every ```python block of every page runs, and the site builds strictly."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import re
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
from cache_memo import Memo
from tool_venvs import TEST_CACHE

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# the pages with code to run (the others started a local archive for nothing)
PAGES = sorted(p for p in DOCS.glob("*.md")
               if p.name not in ("reliability.md", "changelog.md") and BLOCK.search(p.read_text()))
SETUP = BLOCK.findall((DOCS / "index.md").read_text())[0]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the pages make their folders with tempfile.mkdtemp(), as a reader would: here in the test's own folder,
    # which pytest removes (they were left in /tmp, some 18 folders a run)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
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


def documented(source: bytes) -> bytes:
    """What mkdocstrings (griffe, which reads the sources without running them) takes from a module: its syntax
    tree with the body of every function but a class's ``__init__`` (where griffe finds instance attributes)
    reduced to its docstring; the bodies, comments and line positions are not rendered (show_source is off)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "__init__":
            node.body = node.body[:1] if ast.get_docstring(node, clean=False) is not None else []
    return ast.dump(tree).encode()


def site_inputs() -> str:
    """A digest of everything `mkdocs build` reads: its configuration, the pages and their images, the files the
    pages include (``--8<--``), what mkdocstrings reads of the package's sources (:func:`documented`), and this
    Python and the distributions installed beside it (mkdocs, its theme and plugins, their templates)."""
    root = DOCS.parent
    package = root / "isicarchive"
    files = [root / "mkdocs.yml", *DOCS.rglob("*"), *package.rglob("*.py"), *package.rglob("*.pyi")]
    for page in DOCS.glob("*.md"):
        files += [root / name for name in re.findall(r'^--8<-- "([^"]+)"', page.read_text(), re.M)]
    # parsing the package takes a second: each source's documented part is remembered by the source's own digest
    memo = Memo("site-builds/documented.json", keep=5000)
    digest = hashlib.sha256()
    for path in sorted({p for p in files if p.is_file()}):
        data = path.read_bytes()
        if path.is_relative_to(package):
            data = memo.get(hashlib.sha256(data).hexdigest(),
                            lambda source=data: hashlib.sha256(documented(source)).hexdigest()).encode()
        digest.update(f"{path.relative_to(root)}\0{len(data)}\0".encode())
        digest.update(data)
    memo.save()
    site = Path(sysconfig.get_path("purelib"))
    digest.update("\n".join([sys.version, *sorted(p.name for p in site.glob("*.dist-info"))]).encode())
    return digest.hexdigest()


def test_site_builds_strictly(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    # A strict build of these very inputs that passed before passes again (its outcome depends on nothing else), so its
    # success is kept in the test cache under the inputs' digest, as mypy keeps a module's check under its
    # source's hash: any change to a page, the configuration, a docstring or signature of the package or an installed
    # version builds again. A run that does not build says so (a skip with its reason), rather than passing unseen.
    digest = site_inputs()
    passed = TEST_CACHE / "site-builds" / digest
    if passed.exists():
        pytest.skip(f"the strict site build passed before for these exact inputs (sha256 {digest[:16]}); "
                    f"remove {passed} to build again")
    templates = TEST_CACHE / "jinja"
    templates.mkdir(parents=True, exist_ok=True)
    build = [sys.executable, "-c", BUILD, str(templates), "build", "--strict", "-d", str(tmp_path / "site")]
    done = subprocess.run(build, capture_output=True, text=True, cwd=DOCS.parent,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "reference" / "index.html").exists()
    with contextlib.suppress(OSError):  # a test cache that cannot be written: built again next time
        passed.parent.mkdir(parents=True, exist_ok=True)
        passed.write_text("mkdocs build --strict passed\n")
