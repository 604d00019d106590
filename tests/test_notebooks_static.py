"""Every notebook of notebooks/ against the package's API, without running it.

Executing the Figure 1 and Figure 3 notebooks takes minutes (marked ``slow``:
tests/test_notebooks_vae.py, tests/test_notebooks_phase.py). This check takes a
second: every code cell parses; every ``from vaefp_jax… import name`` resolves;
every attribute chain on a name bound to a vaefp_jax module or object (``vf.solve``,
``phase.sweep``, ``cs.LipschitzBound``) resolves; and every call of a package
function or class passes only keyword arguments its signature accepts. A renamed
function, module or keyword fails here, as it would in the notebook.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib

import nbformat
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _resolve(obj, attr, where):
    if hasattr(obj, attr):
        return getattr(obj, attr)
    if inspect.ismodule(obj):   # a submodule not imported by its package
        try:
            return importlib.import_module(f"{obj.__name__}.{attr}")
        except ImportError:
            pass
    raise AssertionError(f"{where}: {getattr(obj, '__name__', obj)!s} has no attribute {attr!r}")


def _is_ours(obj) -> bool:
    mod = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", "") or ""
    return mod == "vaefp_jax" or mod.startswith("vaefp_jax.")


class _Checker(ast.NodeVisitor):
    """Binds the names a cell imports from vaefp_jax and checks what is used through them."""

    def __init__(self, where):
        self.where = where
        self.names = {}   # local name -> package object
        self.checked = 0

    def visit_Import(self, node):
        for a in node.names:
            if a.name == "vaefp_jax" or a.name.startswith("vaefp_jax."):
                mod = importlib.import_module(a.name)
                self.names[a.asname or a.name.split(".")[0]] = mod if a.asname else importlib.import_module("vaefp_jax")
                self.checked += 1

    def visit_ImportFrom(self, node):
        if node.module and (node.module == "vaefp_jax" or node.module.startswith("vaefp_jax.")):
            mod = importlib.import_module(node.module)
            for a in node.names:
                self.names[a.asname or a.name] = _resolve(mod, a.name, self.where)
                self.checked += 1

    def _value(self, node):
        """The package object an expression ``name.attr.attr`` denotes, or None."""
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self._value(node.value)
            if base is not None and _is_ours(base):
                self.checked += 1
                return _resolve(base, node.attr, self.where)
        return None

    def visit_Attribute(self, node):
        self._value(node)
        self.generic_visit(node)

    def visit_Call(self, node):
        fn = self._value(node.func)
        if fn is not None and callable(fn) and _is_ours(fn):
            try:
                sig = inspect.signature(fn)
            except (TypeError, ValueError):
                sig = None
            if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
                for kw in node.keywords:
                    if kw.arg is not None:
                        assert kw.arg in sig.parameters, (f"{self.where}: {fn.__qualname__}() has no keyword "
                                                          f"{kw.arg!r}")
                        self.checked += 1
        self.generic_visit(node)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_uses_only_what_the_package_has(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    checker = _Checker(path.name)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        checker.where = f"{path.name}, cell {i}"
        checker.visit(ast.parse(source, filename=checker.where))
    assert checker.names, f"{path.name} imports nothing from vaefp_jax"
    assert checker.checked >= 5, checker.checked


def test_the_checker_catches_a_renamed_keyword_and_attribute():
    checker = _Checker("probe")
    checker.visit(ast.parse("import vaefp_jax as vf\nvf.solve"))
    with pytest.raises(AssertionError, match="no keyword 'betaz'"):
        checker.visit(ast.parse("vf.solve(x, betaz=1)"))
    with pytest.raises(AssertionError, match="no attribute 'solve_all'"):
        checker.visit(ast.parse("vf.solve_all(x)"))
    with pytest.raises(AssertionError, match="no attribute 'nope'"):
        checker.visit(ast.parse("from vaefp_jax.phase import nope"))
