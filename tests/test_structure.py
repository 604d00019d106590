"""The package's layout: one concept per module, no import cycles, no private names across modules.

Read from the source with ``ast`` (nothing is imported), so these checks cost nothing and
fail with the offending module and line.
"""

from __future__ import annotations

import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "vaefp_jax"
MAX_LINES = 400


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("vaefp_jax",) + path.relative_to(PACKAGE).with_suffix("").parts)
        yield name.removesuffix(".__init__"), path


def _imports(name, path):
    """(target module, imported names, line) for every module-level import of vaefp_jax code."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            if mod.split(".")[0] == "vaefp_jax":
                yield mod, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "vaefp_jax":
                    yield a.name, [], node.lineno


def test_modules_are_small():
    long = {name: len(path.read_text().splitlines()) for name, path in _modules()}
    assert {k: v for k, v in long.items() if v > MAX_LINES} == {}


def test_no_private_names_imported_across_modules():
    bad = []
    for name, path in _modules():
        for mod, names, line in _imports(name, path):
            bad += [f"{path.name}:{line} imports {mod}.{n}" for n in names if n.startswith("_") and n != "_validate"]
    assert bad == []


def test_no_import_cycles():
    modules = dict(_modules())
    graph = {}
    for name, path in modules.items():
        if path.name == "__init__.py":
            continue  # a package re-exporting its children is not a cycle
        deps = set()
        for mod, names, _ in _imports(name, path):
            for target in [f"{mod}.{n}" for n in names] + [mod]:
                if target in modules and modules[target].name != "__init__.py":
                    deps.add(target)
                    break
        graph[name] = deps
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_docstrings_hold_no_timings_or_dates():
    pattern = re.compile(r"\b\d+(\.\d+)? ?(ms|µs|us)\b|\b20\d\d-\d\d-\d\d\b")
    bad = []
    for name, path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node) or ""
                if pattern.search(doc):
                    bad.append(f"{name}.{getattr(node, 'name', '')}: {pattern.search(doc).group(0)}")
    assert bad == []
