"""The dependency order a reader can draw: glm4/ (what GLM-4 is) at the bottom, then common/ and sources/, then
runtimes/ and convert/; no import cycle between modules or between packages, and no path from runtimes/ or
serve/ to a converter, optimum or NNCF.

Reads every module's imports with ast, function-level imports included, so an import hidden inside a function
counts like one at the top; paths are followed through every module on the way."""

import ast
import functools
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"glm4": "glmkit.glm4", "common": "glmkit.common", "sources": "glmkit.sources",
            "convert": "glmkit.convert", "runtimes": "glmkit.runtimes",
            "benchmarks": "glmkit.benchmarks", "serve": "glmkit.serve"}
# The converters and what only conversion needs: no path from runtimes/ or serve/ leads to any of them.
CONVERTERS = {"glmkit.convert.hf", "glmkit.convert.openvino", "glmkit.convert.gguf", "glmkit.convert.verify",
              "glmkit.convert.cli", "glmkit.convert.pipeline"}
HEAVY = ("optimum", "nncf")
# Each package may import only those before it.
ORDER = ["glmkit.glm4", "glmkit.common", "glmkit.sources", "glmkit.runtimes", "glmkit.convert", "glmkit.serve",
         "glmkit.benchmarks"]


@functools.cache
def modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in PACKAGES.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            parts = f.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((pkg, *parts))] = f
    return out


@functools.cache
def imports(name: str, path: Path) -> frozenset[str]:
    """Every module `name` imports, resolved to full names (`from . import x` → pkg.x when x is a module)."""
    known = modules()
    pkg = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                found.add(full if full in known else base)
    return frozenset(m for m in found if m)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {n: {m for m in imports(n, p) if m in known and m != n} for n, p in known.items()}


def test_the_graph_reads_imports_inside_functions():
    """The test's own reader must see function-level imports, or a hidden cycle would pass."""
    g = graph()
    assert "glmkit.sources.remap" in g["glmkit.sources.source"]  # imported inside transformers_dir()
    assert "glmkit.runtimes.session" in g["glmkit.runtimes.base"]  # imported inside Runtime.chat()


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if not state.get(m):
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if not state.get(n):
            visit(n)


def reachable(g: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module reachable from `start`, with one import path to it."""
    paths, todo = {start: [start]}, [start]
    while todo:
        n = todo.pop()
        for m in sorted(g[n]):
            if m not in paths:
                paths[m] = paths[n] + [m]
                todo.append(m)
    return paths


def test_the_reader_follows_paths():
    g = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert reachable(g, "a")["c"] == ["a", "b", "c"]


def test_no_path_from_runtimes_or_serve_reaches_a_converter():
    g, known = graph(), modules()
    for name in g:
        if not name.startswith(("glmkit.runtimes", "glmkit.serve")):  # both run in the lean install
            continue
        paths = reachable(g, name)
        for bad in sorted(set(paths) & CONVERTERS):
            raise AssertionError(f"{' → '.join(paths[bad])}: {name} reaches a converter")
        for mod, path in paths.items():
            heavy = {m for m in imports(mod, known[mod]) if m.split(".")[0] in HEAVY}
            assert not heavy, f"{' → '.join(path)} imports {sorted(heavy)}"


def package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_packages_import_only_the_layers_below_them():
    """No cycle between packages either (runtimes ↔ convert was one, allow-listed): every import of another
    glmkit package, function-level ones included, points down ORDER."""
    g = graph()
    for name, deps in g.items():
        for dep in deps:
            here, there = ORDER.index(package(name)), ORDER.index(package(dep))
            assert there <= here, f"{name} imports {dep}: {package(dep)} is above {package(name)}"


def test_glm4_is_the_bottom_layer():
    """glm4/ imports nothing of glmkit's above it; runtimes/ and serve/ take GLM-4 facts from it, sources from
    glmkit.sources, and nothing from glmkit.convert."""
    g = graph()
    for name, deps in g.items():
        if name.startswith("glmkit.glm4"):
            assert all(d.startswith("glmkit.glm4") for d in deps), (name, sorted(deps))
        if name.startswith(("glmkit.runtimes", "glmkit.serve")):
            assert not {d for d in deps if d.startswith("glmkit.convert")}, name
            assert "glmkit.convert" not in imports(name, modules()[name]), name


def test_benchmarks_use_no_private_names():
    """benchmarks/ and serve/ go through the public API: no `_name` imported or reached as an attribute of another
    package."""
    for name, path in modules().items():
        if not name.startswith(("glmkit.benchmarks", "glmkit.serve")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("glmkit."):
                assert not [a.name for a in node.names if a.name.startswith("_")], (name, node.module)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                assert isinstance(node.value, ast.Name) and node.value.id == "self", (name, node.attr)


def test_importing_runtimes_loads_no_converter():
    code = (f"import sys, glmkit.runtimes; bad = sorted(m for m in sys.modules if m in {sorted(CONVERTERS)!r} or "
            "m.split('.')[0] in ('optimum', 'nncf')); print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
