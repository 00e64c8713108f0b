"""Shared fixtures: real local archives over HTTP, fast-retry sessions, a test keyring."""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import keyring
import keyring.backend
import pytest
from tool_venvs import TEST_CACHE, link_installed_bytecode

if TYPE_CHECKING:
    # imported where used: pytest's controller process (xdist's) runs no test and has no use for numpy,
    # requests and the package (0.5 s of CPU before the workers start)
    from isicarchive import IsicApi
    from isicarchive.testing import LocalArchive

# Nobody answers prompts in the test suite.
os.environ.setdefault("ISICARCHIVE_NO_PROMPT", "1")
# The suite starts some hundred interpreters (CLI runs, scripts, workers, tools' venvs). Where the shell says
# not to write bytecode, each of them compiled every module of the package again; their bytecode goes to the
# test cache instead (never next to the sources), and is compiled once.
# This process too, for what it imports from here on (pytest rewrites the asserts of plugins such as
# hypothesis's as it imports them, and caches them only where bytecode is written).
# A prefix hides the bytecode pip compiled next to the installed packages (and the standard library's), which
# a new virtualenv (a new clone, CI) then compiled again in each process that imported them first, xdist's
# workers at once: 2,700 modules, some 40 s of CPU. The first pytest process of an interpreter links them in.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(TEST_CACHE / "pycache"))
    sys.pycache_prefix = sys.pycache_prefix or os.environ["PYTHONPYCACHEPREFIX"]
    sys.dont_write_bytecode = False
    if "PYTEST_XDIST_WORKER" not in os.environ:
        link_installed_bytecode(Path(sys.pycache_prefix))
# The command line's default cache folder (the user's cache folder) is a temporary one here.
# Made by the first pytest process (xdist's workers inherit it) and removed when that process ends.
if "ISICARCHIVE_CACHE_DIR" not in os.environ:
    os.environ["ISICARCHIVE_CACHE_DIR"] = tempfile.mkdtemp(prefix="isicarchive-test-cache-")
    atexit.register(shutil.rmtree, os.environ["ISICARCHIVE_CACHE_DIR"], ignore_errors=True)


def _leave_without_finalizing() -> None:
    """An xdist worker's last step at exit, os._exit instead of Python's finalization.

    Registered when the worker is configured, it runs after every exit handler registered since (LIFO: the
    package's, Dask's, multiprocessing's, weakref finalizers', the CLI runner's) and before the two registered
    earlier: logging's, run here, and execnet's group cleanup (a worker's group has no gateways). Finalizing
    freed every object of the libraries a worker has imported (numpy, pandas, pyarrow, Dask, scikit-learn...):
    0.55 s of CPU a worker, all at the end of the run. xdist reads nothing from a worker's exit status.
    """
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110  # a closed stream: nothing to keep
            pass
    os._exit(0)


def pytest_configure(config: pytest.Config) -> None:
    # an xdist worker (not a pytest a test starts, which inherits PYTEST_XDIST_WORKER); coverage.py writes its data
    # from an exit handler registered before this one: such runs finalize as usual
    if hasattr(config, "workerinput") and "coverage" not in sys.modules:
        atexit.register(_leave_without_finalizing)


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring that lives in memory, so tests never touch the machine's real one."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        from keyring.errors import PasswordDeleteError

        if (service, username) not in self.store:
            raise PasswordDeleteError("not found")
        del self.store[(service, username)]


_TESTS = itertools.count()


@pytest.fixture(autouse=True)
def memory_keyring(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemoryKeyring]:
    ring = MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(ring)
    # a folder of the test's own: its tmp_path where it has one, else a name nobody has made yet (making a
    # tmp_path for each of 1,000 tests cost 2 s of CPU)
    if "tmp_path" in request.fixturenames:
        own = request.getfixturevalue("tmp_path")
    else:
        own = tmp_path_factory.getbasetemp() / "tests-without-tmp_path" / str(next(_TESTS))
    monkeypatch.setenv("NETRC", str(own / "no-netrc"))
    monkeypatch.setenv("ISICARCHIVE_INDEX_FOLDER", str(own / "disk-indexes"))  # not the user's cache
    yield ring
    keyring.set_keyring(previous)


@pytest.fixture(scope="session")
def archive() -> Iterator[LocalArchive]:
    """A shared, fault-free local archive (do not add faults to it)."""
    from isicarchive.testing import ArchiveConfig, LocalArchive

    with LocalArchive(seed=11, config=ArchiveConfig(images=60)) as server:
        yield server


@pytest.fixture
def fresh_archive() -> Iterator[LocalArchive]:
    """A private archive for tests that inject faults or count requests."""
    from isicarchive.testing import ArchiveConfig, LocalArchive

    with LocalArchive(seed=5, config=ArchiveConfig(images=40)) as server:
        yield server


def make_api(server: LocalArchive, *args: object, **kwargs: object) -> IsicApi:
    """A session against a local archive with fast retries and no progress bars.

    The legacy v1 API unless ``api_version`` or ``api_uri`` says otherwise: most tests were
    written against it (the library itself defaults to v2, see tests/test_first_day.py).
    """
    kwargs.setdefault("hostname", server.url)
    if "api_uri" not in kwargs and not str(kwargs["hostname"]).startswith("file:"):
        kwargs.setdefault("api_version", 1)
    kwargs.setdefault("backoff", 0.001)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("timeout", (2.0, 5.0))
    from isicarchive import IsicApi

    return IsicApi(*args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def api_factory() -> object:
    return make_api


#: the modules that take longest (wall time, 2026-12-07 evening: torch in its venv, Dask clusters, the docs site,
#: the examples, the sleeping Ctrl-C, CLI, fault and trickle tests), run first: xdist hands each worker whole
#: modules in collection order (with --no-loadscope-reorder, pyproject's addopts), and a long module handed out
#: last keeps one core busy while the others have nothing left to do
LONGEST_FIRST = ["test_torch.py", "test_scaleout.py", "test_docs.py", "test_examples.py", "test_first_day.py",
                 "test_cli.py", "test_fault_matrix.py", "test_v2.py", "test_metadata_sync.py", "test_superpixels.py",
                 "test_static.py", "test_original_package.py", "test_releases.py", "test_trickles.py",
                 "test_training.py", "test_crash_and_disk.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module's order is kept


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    """xdist's workers each rewrite the asserts of their share of the test modules before they collect.

    Every worker imports every test module to collect it, all in the same order at the same moment: in a new
    clone (nothing cached yet) each rewrote all 60 of them, 3.2 s of CPU apiece. pytest keeps a rewritten
    module in the bytecode cache (checked against its source's hash, written atomically), so a module one worker
    rewrote is read by the others. This uses pytest's own (private) functions for it; where they are not
    there, the workers rewrite the modules as they collect them, as before.
    """
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and count.isdigit()) or sys.dont_write_bytecode \
            or session.config.getoption("assertmode") != "rewrite":
        return
    try:
        from _pytest.assertion.rewrite import (
            PYC_TAIL,
            _read_pyc,
            _rewrite_test,
            _write_pyc,
            assertstate_key,
            get_cache_dir,
        )
    except ImportError:
        return
    if worker == f"gw{int(count) - 1}":
        # hypothesis, a plugin's package, is rewritten too (1.2 s of CPU), by every worker's collection at once
        import hypothesis.extra.numpy  # noqa: F401
    state = session.config.stash[assertstate_key]
    here = Path(__file__).parent  # as pytest names the modules it imports
    modules = sorted([*here.rglob("test_*.py"), *here.glob("*/**/conftest.py")])
    for module in modules[int(worker[2:]) :: int(count)]:
        pyc = get_cache_dir(module) / (module.name[:-3] + PYC_TAIL)
        try:
            if _read_pyc(module, pyc) is None:
                source_hash, code = _rewrite_test(module, session.config)
                pyc.parent.mkdir(parents=True, exist_ok=True)
                _write_pyc(state, code, source_hash, pyc)
        except Exception:  # noqa: BLE001, S112  # (a syntax error, say): collecting the module reports it
            continue


#: modules one xdist worker runs one after the other, as one unit: they import the same costly packages, which a
#: worker imports once (the docs' Challenge releases page and test_releases score with isic-challenge-scoring:
#: scikit-learn and scipy, 2 s of CPU; the docs' Scaling out page and test_scaleout use dask.dataframe and
#: distributed, 2 s; the docs' Training page, the examples' training notebook and test_exports use Hugging Face
#: datasets and webdataset, 2.5 s a module; the command-line tests run their commands forked from one parent
#: process a worker starts, which imports the package, 0.45 s of CPU: tests/cli_runner.py)
RUN_WITH = {"test_releases.py": "test_docs.py", "test_scaleout.py": "test_docs.py", "test_examples.py": "test_docs.py",
            "test_exports.py": "test_docs.py",
            # test_errors imports every package module: isicarchive.allocator imports distributed (0.5 s of CPU)
            "test_errors.py": "test_docs.py",
            "test_cli.py": "test_first_day.py", "test_oauth.py": "test_first_day.py", "test_v2.py": "test_first_day.py"}


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedImports(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            folder, _, name = scope.rpartition("/")
            return f"{folder}/{RUN_WITH[name]}" if name in RUN_WITH else scope

    return SharedImports(config, log)  # type: ignore[arg-type]

