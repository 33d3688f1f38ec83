"""The dependency order a reader can draw: no import cycles, and runtimes/ never reaches a converter.

Reads every module's imports with ast, function-level imports included, so an import hidden inside a function
counts like one at the top."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"convert": "glmkit.convert", "runtimes": "glmkit.runtimes", "benchmarks": "glmkit.benchmarks",
            "serve": "glmkit.serve"}
# The converters and what only conversion needs: runtimes/ must import none of them.
CONVERTERS = {"glmkit.convert.hf", "glmkit.convert.openvino", "glmkit.convert.gguf", "glmkit.convert.verify",
              "glmkit.convert.cli", "glmkit.convert.remap"}
HEAVY = ("optimum", "nncf")


def modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in PACKAGES.items():
        for f in sorted((ROOT / folder).glob("*.py")):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def imports(name: str, path: Path) -> set[str]:
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
    return {m for m in found if m}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {n: {m for m in imports(n, p) if m in known and m != n} for n, p in known.items()}


def test_the_graph_reads_imports_inside_functions():
    """The test's own reader must see function-level imports, or a hidden cycle would pass."""
    g = graph()
    assert "glmkit.convert.remap" in g["glmkit.convert.source"]  # imported inside transformers_dir()
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


def test_runtimes_import_no_converter():
    g = graph()
    for name, deps in g.items():
        if name.startswith(("glmkit.runtimes", "glmkit.serve")):  # both run in the lean install
            bad = deps & CONVERTERS
            assert not bad, f"{name} imports converter module(s) {sorted(bad)}"
            heavy = {m for m in imports(name, modules()[name]) if m.split(".")[0] in HEAVY}
            assert not heavy, f"{name} imports {sorted(heavy)}"


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
    code = ("import sys, glmkit.runtimes; bad = sorted(m for m in sys.modules if m in %r or "
            "m.split('.')[0] in ('optimum', 'nncf')); print(bad); sys.exit(1 if bad else 0)") % (sorted(CONVERTERS),)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
