"""The code says it once: every file is on the architecture map, imports sit at the top, plots follow one convention."""
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
PACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
# every file of the library as the map names it: "dpo" (alignlab/dpo.py), "checks/_core" (alignlab/checks/_core.py)
FILES = sorted(p.relative_to(PACKAGE).with_suffix("").as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
               or p.parent != PACKAGE)
ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
LAZY_OK = {"matplotlib", "matplotlib.pyplot", "ipywidgets", "IPython.display"}   # heavy display stacks only
# The lazy imports that stay, each with its reason: (file, function, what it imports) -> why.
LAZY_ALLOWED = {
    ("checks/debugging", "_model", "transformers"):
        "`import alignlab.checks` (every notebook, and the grading kernel's guard before any student code) stays "
        "free of transformers; only notebook 05's debugging exercise builds a GPT-2",
    ("checks/debugging", "_expected_step", "..dpo"):
        "the same: alignlab.dpo imports transformers and the DPO loop, needed by the debugging exercise alone",
    ("grading/guard", "install", "alignlab.checks"):
        "install() must never raise: the grading kernel runs (and grades) even when the checks cannot be imported",
    ("grading/guard", "install", "alignlab.reference"):
        "the same, in a try of its own",
    ("grading/preprocessors", "preprocess", ".judge"):
        "course.apply (nbgrader_config.py: every nbgrader command, formgrader) imports this module; the judge brings "
        "torch and the checks, needed only when a notebook is executed for grading",
    ("grading/sandbox", "enter_kernel", "..checks._core"):
        "keeps alignlab.checks (and torch) out of the sandbox module's imports: probe() imports this module as root, "
        "then `import torch, alignlab.checks` as the unprivileged uid, which must load those files itself",
}


def _map_rows() -> list[str]:
    table = ARCHITECTURE.split("## Module map", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([\w/]+)`", table, re.M)


def test_every_file_module_and_package_is_in_the_architecture_map():
    listed = set(_map_rows())
    expected = set(FILES) | set(PACKAGES)
    assert expected <= listed, f"files missing from docs/architecture.md's map: {sorted(expected - listed)}"
    assert listed <= expected, f"the map lists files that do not exist: {sorted(listed - expected)}"


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_s_files_are_mapped_one_row_each_in_alphabetical_order(package):
    rows = [r for r in _map_rows() if r.startswith(package + "/")]
    assert rows == sorted(set(rows)), f"docs/architecture.md: the rows of alignlab/{package}/ are not one per file in " \
                                      f"alphabetical order: {rows}"


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


def test_the_conventions_state_the_contract_of_every_exercise():
    """docs/conventions.md holds one row per graded exercise, as alignlab.checks knows them."""
    from alignlab.checks.exercises import EXERCISES

    contracts = (REPO / "docs" / "conventions.md").read_text(encoding="utf-8").split("## Exercise contracts", 1)[1]
    listed = re.findall(r"^\| \d\d\w? \| `(\w+)` \|", contracts.split("\n## ", 1)[0], re.M)
    assert sorted(listed) == sorted(EXERCISES), (f"docs/conventions.md's contracts: missing {sorted(set(EXERCISES) - set(listed))}, "
                                                 f"extra or repeated {sorted(set(listed) - set(EXERCISES)) or listed}")


def test_nothing_cites_a_design_document_outside_the_repository():
    """What the code relies on is in docs/ (conventions.md): a citation must point at a file a reader has."""
    cited = re.compile(r"course[- ]design\b|design,? section \d", re.I)
    files = [REPO / "README.md", REPO / "Makefile", *REPO.glob("docs/*.md"), *REPO.glob("autograder/*.md"),
             *(p for folder in ("alignlab", "tests", "benchmarks", "scripts", "solutions")
               for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".ipynb", ".md", ".sh"))]
    found = [f"{f.relative_to(REPO)}: {m.group(0)!r}" for f in files if f.is_file() and f != Path(__file__).resolve()
             for m in cited.finditer(f.read_text(encoding="utf-8", errors="replace"))]
    assert not found, f"citations of a design document that is not in the repository (cite docs/ instead): {found}"


def _lazy_imports(name: str) -> list[tuple[str, str]]:
    """(function, imported module) for every import inside a function of alignlab/NAME.py."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [(node.name, a.name) for a in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    found.append((node.name, f"{'.' * inner.level}{inner.module or ''}"))
    return found


@pytest.mark.parametrize("name", FILES)
def test_imports_are_at_the_top_except_display_stacks(name):
    for function, module in _lazy_imports(name):
        if module in LAZY_OK or (name, function, module) in LAZY_ALLOWED:
            continue
        raise AssertionError(f"alignlab/{name}.py: {function} imports {module} inside the function; import at the top "
                             "(or, if it truly must stay lazy, add it to LAZY_ALLOWED here with the reason)")


def test_every_allowed_lazy_import_is_still_there():
    """The allow-list only shrinks: an entry whose import moved to the top (or whose file went) is removed."""
    present = {(name, function, module) for name in FILES for function, module in _lazy_imports(name)}
    stale = sorted(set(LAZY_ALLOWED) - present)
    assert not stale, f"LAZY_ALLOWED lists lazy imports that no longer exist: {stale}; remove them"


def _top_level_imports(name: str) -> set[str]:
    """The library files that alignlab/NAME.py imports at its top level, as the map names them."""
    package = name.split("/")[:-1]
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    targets = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alignlab."):
            base = node.module.split(".")[1:]
        else:
            continue
        named = ["/".join(base)] if node.module else []                  # `from .x import y`: x
        named += ["/".join(base + [alias.name]) for alias in node.names]   # `from . import x`: x (a file, maybe)
        targets |= {t for t in named if t in FILES or t in PACKAGES}
    return {f"{t}/__init__" if t in PACKAGES else t for t in targets} - {name}


def test_no_import_cycle_between_library_files():
    graph = {name: _top_level_imports(name) for name in FILES}

    def visit(node, stack):
        assert node not in stack, f"import cycle: {' -> '.join(stack + [node])}"
        for dep in graph.get(node, ()):
            visit(dep, stack + [node])

    for name in FILES:
        visit(name, [])


def test_every_config_s_for_track_has_one_shape():
    """``XConfig.for_track(track, **overrides)``: sizes from ``track.pick``, then ``replace(cfg, **overrides)``."""
    found = []
    for name in MODULES:
        module = importlib.import_module(f"alignlab.{name}")
        for cname, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or "for_track" not in vars(cls):
                continue
            found.append(cname)
            fn = vars(cls)["for_track"].__func__
            params = inspect.signature(fn).parameters
            assert [(k, v.kind.name) for k, v in params.items()] == [("cls", "POSITIONAL_OR_KEYWORD"), (
                "track", "POSITIONAL_OR_KEYWORD"), ("overrides", "VAR_KEYWORD")], f"{cname}.for_track's signature"
            assert fn.__doc__ and fn.__doc__.splitlines()[0].endswith(" for ``track`` (CPU, GPU, grading); ``overrides`` "
                                                                     "replace any field."), f"{cname}.for_track's docstring"
            assert inspect.getsource(fn).rstrip().endswith("return replace(cfg, **overrides)"), f"{cname}.for_track's return"
    assert len(found) >= 6, found


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
