"""The code says it once: every module is on the architecture map, imports sit at the top, plots follow one convention."""
from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "alignlab"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
GRADING = sorted(f"grading/{p.stem}" for p in (PACKAGE / "grading").glob("*.py") if p.stem != "__init__")
# The grading modules of the judge, the sandbox and the class report keep the library's rule on imports too (the
# older grading modules import nbgrader lazily, so that the command line starts fast).
STRICT_GRADING = ["grading/judge", "grading/sandbox", "grading/similarity", "grading/report"]
ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
LAZY_OK = {"matplotlib", "matplotlib.pyplot", "ipywidgets", "IPython.display"}   # heavy display stacks only


def test_every_module_and_package_is_in_the_architecture_map():
    table = ARCHITECTURE.split("## Module map", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([\w/]+)`", table, re.M))
    expected = set(MODULES) | set(GRADING) | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert expected <= listed, f"modules missing from docs/architecture.md's map: {sorted(expected - listed)}"
    assert listed <= expected, f"the map lists modules that do not exist: {sorted(listed - expected)}"


def test_the_concept_index_points_at_functions_that_exist():
    index = ARCHITECTURE.split("## Where each concept lives", 1)[1].split("\n## ", 1)[0]
    refs = re.findall(r"`alignlab/([\w/]+)\.py:(\w+)`", index)
    assert len(refs) >= 20
    for path, name in refs:
        module = importlib.import_module("alignlab." + path.replace("/", "."))
        assert hasattr(module, name), f"docs/architecture.md points at alignlab/{path}.py:{name}, which does not exist"


def test_documents_cited_by_the_docs_exist_in_the_repository():
    for doc in (REPO / "docs").glob("*.md"):
        for ref in re.findall(r"`((?:docs|scripts|benchmarks|tests|autograder|alignlab)/[\w./-]+)`", doc.read_text()):
            assert (REPO / ref.split(":")[0]).exists(), f"{doc.name} cites {ref}, which is not in the repository"


@pytest.mark.parametrize("name", MODULES + STRICT_GRADING)
def test_imports_are_at_the_top_except_display_stacks(name):
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    bad = [a.name for a in inner.names if a.name not in LAZY_OK]
                elif isinstance(inner, ast.ImportFrom):
                    bad = [] if inner.module in LAZY_OK else [f"{'.' * inner.level}{inner.module}"]
                else:
                    continue
                assert not bad, f"alignlab/{name}.py: {node.name} imports {bad} inside the function; import at the top"


def test_no_import_cycle_between_library_modules():
    graph = {}
    for name in MODULES:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        deps = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        graph[name] = {d for d in deps if d in graph or d in MODULES}

    def visit(node, stack):
        assert node not in stack, f"import cycle: {' -> '.join(stack + [node])}"
        for dep in graph.get(node, ()):
            visit(dep, stack + [node])

    for name in MODULES:
        visit(name, [])


def test_plot_functions_return_the_figure_and_leave_showing_to_jupyter():
    """A plot function that calls plt.show() and returns its figure draws twice in a notebook cell."""
    for name in MODULES:
        module = importlib.import_module(f"alignlab.{name}")
        for fname, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__ or not fname.startswith("plot_"):
                continue
            source = inspect.getsource(fn)
            assert "plt.show" not in source, f"alignlab.{name}.{fname} calls plt.show(); return the figure instead"
            assert re.search(r"return fig\b", source), f"alignlab.{name}.{fname} does not return its figure"
