"""The layering docs/architecture.md describes, checked on the real imports (scripts/import_layers.py)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from cache_memo import Memo

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_layers.py"


def _layers_module() -> object:
    spec = importlib.util.spec_from_file_location("import_layers", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _graph(layers: Any) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``layers.graph()``, each module's imports remembered in the test cache under a digest of the script, the
    package's module names and the module's source (parsing the package costs half a second of CPU; a changed
    module, or a changed script, is parsed again)."""
    memo = Memo("import-layers/imports.json", keep=2000)
    script = hashlib.sha256(SCRIPT.read_bytes()).hexdigest()
    parse = layers.imports

    def imports(path: Path, modules: set[str]) -> tuple[set[str], set[str]]:
        names = "\n".join(sorted(modules))
        key = hashlib.sha256(f"{script}\0{path.relative_to(layers.ROOT)}\0{names}\0".encode()
                             + path.read_bytes()).hexdigest()
        top, lazy = memo.get(key, lambda: [sorted(found) for found in parse(path, modules)])
        return set(top), set(lazy)

    layers.imports = imports
    try:
        graph = layers.graph()
    finally:
        layers.imports = parse
    memo.save()
    return graph  # type: ignore[no-any-return]


def test_no_import_cycle_and_imports_go_down_the_tiers() -> None:
    layers = _layers_module()
    top, lazy = _graph(layers)
    depth = layers.layers(top)  # type: ignore[attr-defined]  # raises on a module-level import cycle
    assert depth["isicarchive.errors"] == 0 and depth["isicarchive.api"] > depth["isicarchive.store"]
    # the one documented exception: the facade records a selection's origin with lockfile.Origin
    assert layers.upward(top) in ([], [("isicarchive.api", "isicarchive.lockfile")])  # type: ignore[attr-defined]
    # backends and models never import the facade, even lazily
    for module in [m for m in top if m.startswith(("isicarchive.backends", "isicarchive.models"))]:
        assert "isicarchive.api" not in top[module] | lazy[module], module


def test_the_script_finds_an_upward_import(tmp_path: Path) -> None:
    layers = _layers_module()
    top = {"isicarchive.errors": {"isicarchive.api"}, "isicarchive.api": {"isicarchive.errors"}}
    assert layers.upward({"isicarchive.errors": {"isicarchive.api"}, "isicarchive.api": set()}) == [  # type: ignore
        ("isicarchive.errors", "isicarchive.api")]
    try:
        layers.layers(top)  # type: ignore[attr-defined]
    except SystemExit as exc:
        assert "cycle" in str(exc)
    else:
        raise AssertionError("a cycle went unnoticed")
