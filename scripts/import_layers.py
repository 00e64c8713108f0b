"""The package's layers, computed from its module-level imports (docs/architecture.md is drawn from this).

    python scripts/import_layers.py            # layer table (markdown) and the edges of each module
    python scripts/import_layers.py --check    # exit 1 when a module-level import cycle exists

Only imports that run when a module is imported count: those at module level, outside
``if TYPE_CHECKING:``.  Imports inside functions (lazy ones, e.g. of optional extras or to break
cycles) are listed separately: they are real dependencies, taken when the function runs.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "isicarchive"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("isicarchive"):
        return []
    if node.module is None or (node.level and not node.module):
        return [f"{target}.{alias.name}" for alias in node.names]
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def imports(path: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """(module-level, inside functions) imports of package modules."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            found: list[str] = []
            if isinstance(child, ast.Import):
                found = [a.name for a in child.names if a.name.startswith("isicarchive")]
            elif isinstance(child, ast.ImportFrom):
                found = resolve(name, is_package, child)
            for target in found:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    (lazy if inner else top).add(target)
            if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):  # imports are statements
                visit(child, inner)

    visit(tree, False)
    return top, lazy - top


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    top, lazy = {}, {}
    for name, path in paths.items():
        top[name], lazy[name] = imports(path, modules)
    # a package's __init__ runs first when one of its modules is imported: not a dependency of the module
    return top, lazy


#: the layers of docs/architecture.md, bottom first: tier → modules (a package name covers its modules)
TIERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("errors", "_version", "_json", "_gc", "_epoch", "deadlines", "limits", "progress", "csvguard",
                     "hosts", "allocator", "regex", "context", "superpixels", "slic", "models.base", "records",
                     "extras")),
    ("vocabulary", ("legacy", "search", "licenses", "pixels", "empty", "listing", "selection", "grouping",
                    "releases.catalog", "releases.scoring")),
    ("HTTP and files", ("transport", "oauth", "credentials", "account", "locking", "cache", "downloads", "digests")),
    ("sources of records", ("backends", "disk", "releases.files", "releases.reader", "releases.session")),
    ("models and store", ("models", "store")),
    ("facade", ("api", "isicarchive")),
    ("work for a session", ("scaleout", "export", "exports", "lockfile", "collections", "citations", "leakage",
                            "training", "torch", "releases", "releases.sample", "audit")),
    ("entry points", ("cli", "lockcli", "demo", "testing")),
]


def tier_of(module: str) -> int | None:
    short = module.removeprefix("isicarchive.") if module != "isicarchive" else "isicarchive"
    best: tuple[int, int] | None = None  # (length of the matching name, tier)
    for n, (_, names) in enumerate(TIERS):
        for name in names:
            if (short == name or short.startswith(name + ".")) and (best is None or len(name) > best[0]):
                best = (len(name), n)
    return None if best is None else best[1]


def upward(top: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Module-level imports from a lower tier into a higher one (what the layering does not allow)."""
    found = []
    for module, targets in top.items():
        here = tier_of(module)
        for target in targets:
            there = tier_of(target)
            if here is not None and there is not None and there > here and not module.startswith(target + "."):
                found.append((module, target))
    return sorted(found)


def layers(top: dict[str, set[str]]) -> dict[str, int]:
    """Layer 0 imports no package module; layer n imports only from layers below n (packages' own
    ``__init__`` re-exports are left out: they sit above what they export)."""
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def of(module: str) -> int:
        if module in depth:
            return depth[module]
        if module in visiting:
            raise SystemExit(f"import cycle through {module}")
        visiting.add(module)
        below = [of(m) for m in top[module] if not module.startswith(m + ".")]
        visiting.discard(module)
        depth[module] = 1 + max(below) if below else 0
        return depth[module]

    for module in top:
        of(module)
    return depth


def main(argv: list[str]) -> int:
    top, lazy = graph()
    depth = layers(top)  # raises on a module-level cycle
    up = upward(top)
    unplaced = sorted(m for m in top if tier_of(m) is None)
    if "--check" in argv:
        for module, target in up:
            print(f"upward import: {module} -> {target}")
        for module in unplaced:
            print(f"not in a tier: {module}")
        return 1 if up or unplaced else 0
    short = lambda ms: ", ".join(sorted(m.removeprefix("isicarchive.") for m in ms))  # noqa: E731
    edges = sum(len(t) for t in top.values())
    lazy_up = sum(1 for m, ts in lazy.items() for t in ts
                  if tier_of(m) is not None and tier_of(t) is not None and tier_of(t) > tier_of(m))  # type: ignore
    print(f"{len(top)} modules, {edges} module-level imports of package modules, deepest chain {max(depth.values())}; "
          f"{len(up)} go up a tier; {lazy_up} imports inside functions go up (lazy, by design)\n")
    print("| tier | modules |\n|---|---|")
    for n, (name, _) in reversed(list(enumerate(TIERS))):
        members = sorted(m.removeprefix("isicarchive.") for m in top if tier_of(m) == n)
        print(f"| {n} {name} | {', '.join(f'`{m}`' for m in members)} |")
    if unplaced:
        print(f"| (not placed) | {', '.join(f'`{m}`' for m in unplaced)} |")
    print()
    for module, target in up:
        print(f"upward: {module} -> {target}")
    print()
    for module in sorted(top):
        print(f"{module}: {short(top[module])}" + (f"  [lazy: {short(lazy[module])}]" if lazy[module] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
