"""pyproject.toml declares what stylegan_jax imports: the import graph (parsed with ast) against the declared
dependencies and extras.

* every third-party package imported anywhere in ``stylegan_jax`` (at module level or lazily in a function)
  belongs to a distribution declared in ``dependencies`` or in an extra;
* every module imports at load time (its own module-level imports and those of the ``stylegan_jax`` modules it
  imports, transitively) only distributions of ``dependencies`` plus one extra: an environment with the core
  dependencies and that extra installed can import it;
* no extra is dead: each has a distribution that some module imports (``dev`` is the test and lint tooling);
* jax2onnx is used through its public top-level API only.

Import names are mapped to distributions with ``importlib.metadata.packages_distributions()`` of the test
environment; a package that is not installed there (an extra CI does not install) is taken to be the
distribution of the same name (``IMPORT_ALIASES`` for the few that differ).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "stylegan_jax"
# Extras that are not about a feature of the package but about working on it (tests and lint; the benchmark that
# runs the official PyTorch code, benchmarks/official_train_step.py).
TOOLING_EXTRAS = {"dev", "official-bench"}
# Used only when already present (a guarded import with a fallback), so declared nowhere on purpose.
USED_IF_PRESENT = {"IPython": "sampling.show() displays inline when it runs inside IPython / Jupyter"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    return _normalize(match.group(1))


@cache
def _declared() -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = frozenset(_requirement_name(r) for r in project.get("dependencies", []))
    extras = {name: frozenset(_requirement_name(r) for r in reqs)
              for name, reqs in project.get("optional-dependencies", {}).items()}
    return core, extras


@dataclass
class Module:
    name: str  # dotted module name
    path: Path
    eager: set[str] = field(default_factory=set)  # modules imported at load time
    lazy: set[str] = field(default_factory=set)  # modules imported inside functions / TYPE_CHECKING / try blocks


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        base = ".".join(parts[: len(parts) - node.level] + ([node.module] if node.module else []))
    # `from pkg import sub` may import the submodule pkg.sub: keep both, unknown names are dropped later.
    return [base] + [f"{base}.{a.name}" for a in node.names if a.name != "*"]


def _collect(module: Module, tree: ast.AST) -> None:
    def visit(node: ast.AST, eager: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_eager = eager
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                child_eager = False
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.body:
                    visit_one(sub, False)
                for sub in child.orelse:
                    visit_one(sub, eager)
                continue
            elif isinstance(child, ast.Try):
                # `try: import x / except ImportError` marks an optional import
                handles_import_error = any(
                    h.type is None or "ImportError" in ast.unparse(h.type) or "ModuleNotFoundError" in ast.unparse(
                        h.type) for h in child.handlers)
                for sub in child.body:
                    visit_one(sub, eager and not handles_import_error)
                for part in (child.handlers, child.orelse, child.finalbody):
                    for sub in part:
                        visit_one(sub, eager)
                continue
            visit_one(child, child_eager)

    def visit_one(node: ast.AST, eager: bool) -> None:
        target = module.eager if eager else module.lazy
        if isinstance(node, ast.Import):
            target.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target.update(_resolve(module.name, node))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            eager = False
        visit(node, eager)

    visit(tree, True)


@cache
def _graph() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        m = Module(".".join(parts), path)
        _collect(m, ast.parse(path.read_text(), str(path)))
        modules[m.name] = m
    return modules


def _third_party(name: str) -> str | None:
    top = name.split(".")[0]
    if not top or top == PACKAGE or top in sys.stdlib_module_names or top == "__future__":
        return None
    return top


@cache
def _installed() -> dict[str, list[str]]:
    return md.packages_distributions()


# Import names whose distribution is named otherwise, for packages not installed in the test environment
# (CI installs only some extras); installed packages are mapped by their own metadata.
IMPORT_ALIASES = {"PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv-python", "sklearn": "scikit-learn"}


@cache
def _distributions(top: str) -> frozenset[str]:
    dists = _installed().get(top)
    if dists:
        return frozenset(_normalize(d) for d in dists)
    return frozenset({_normalize(IMPORT_ALIASES.get(top, top))})


def _load_time_imports(name: str, graph: dict[str, Module], seen: set[str] | None = None) -> set[str]:
    """Third-party top-level names imported when ``name`` is imported (its parents' __init__ included)."""
    seen = set() if seen is None else seen
    if name in seen or name not in graph:
        return set()
    seen.add(name)
    out: set[str] = set()
    parts = name.split(".")
    for k in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__ first
        out |= _load_time_imports(".".join(parts[:k]), graph, seen)
    for imported in graph[name].eager:
        top = _third_party(imported)
        if top:
            out.add(top)
        elif imported.split(".")[0] == PACKAGE:
            out |= _load_time_imports(imported, graph, seen)
    return out


def _owners(top: str) -> list[str]:
    """Where the distributions of import name ``top`` are declared: 'core' and/or extra names."""
    core, extras = _declared()
    dists = _distributions(top)
    where = ["core"] if dists & core else []
    return where + sorted(e for e, reqs in extras.items() if dists & reqs)


def test_every_imported_package_is_declared():
    graph = _graph()
    undeclared = {}
    for m in graph.values():
        for imported in m.eager | m.lazy:
            top = _third_party(imported)
            if top and top not in USED_IF_PRESENT and not _owners(top):
                undeclared.setdefault(top, set()).add(m.name)
    assert not undeclared, "imported but declared nowhere in pyproject.toml: " + "; ".join(
        f"{top} (by {', '.join(sorted(mods))}; distribution {', '.join(sorted(_distributions(top)))})"
        for top, mods in sorted(undeclared.items()))


def test_each_module_imports_with_core_plus_one_extra():
    core, extras = _declared()
    graph = _graph()
    problems = []
    for name in sorted(graph):
        needed = {top: _distributions(top) for top in _load_time_imports(name, graph)}
        optional = {top: d for top, d in needed.items() if not d & core}
        if not optional:
            continue
        if not any(all(d & reqs for d in optional.values()) for reqs in extras.values()):
            problems.append(f"{name} imports at load time {sorted(optional)}, which no single extra declares "
                            f"(declared in: {', '.join(f'{t}: {_owners(t)}' for t in sorted(optional))})")
    assert not problems, "\n".join(problems)


def test_core_modules_import_only_core_dependencies():
    """The package, its command line and its training path load with the core dependencies alone."""
    core, _ = _declared()
    graph = _graph()
    for name in (PACKAGE, f"{PACKAGE}.cli", f"{PACKAGE}.train.loop", f"{PACKAGE}.data", f"{PACKAGE}.checkpoint"):
        if name not in graph:
            continue
        extra = sorted(t for t in _load_time_imports(name, graph) if not _distributions(t) & core)
        assert not extra, f"{name} needs {extra} at import time, which are not core dependencies"


def test_no_dead_extras():
    _, extras = _declared()
    graph = _graph()
    imported = set()
    for m in graph.values():
        for name in m.eager | m.lazy:
            top = _third_party(name)
            if top:
                imported |= _distributions(top)
    dead = sorted(e for e, reqs in extras.items() if e not in TOOLING_EXTRAS and not reqs & imported)
    assert not dead, f"extras no module of {PACKAGE} imports anything of: {dead}"


def test_jax2onnx_public_api_only():
    private = sorted(f"{m.name}: {name}" for m in _graph().values() for name in m.eager | m.lazy
                     if name.split(".")[0] in ("jax2onnx", "onnx_ir") and name not in ("jax2onnx", "jax2onnx.to_onnx"))
    assert not private, f"jax2onnx internals (or onnx_ir) imported: {private}"
