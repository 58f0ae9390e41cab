"""Every notebook starts with the canonical Colab cell, which does nothing outside Colab and, inside it,
clones the course and installs only the learner's runtime (never Jupyter, nbgrader or a torch of its own)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
import types
from pathlib import Path
from unittest import mock

import nbformat
import pytest

from alignlab.colab import COLAB_CELL, COURSE_REPO

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("solutions/*/*.ipynb")) + sorted(ROOT.glob("notebooks/*/*.ipynb"))
FORBIDDEN = ("jupyterlab", "notebook", "nbgrader", "torch")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(ROOT)) for p in NOTEBOOKS])
def test_first_cell_is_the_colab_cell(path):
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "code" and first.source == COLAB_CELL, \
        f"{path.relative_to(ROOT)}: first cell is not alignlab.colab.COLAB_CELL (run scripts/stamp_colab_cell.py)"


def run_cell(in_colab: bool) -> list:
    """Exec COLAB_CELL with subprocess.run mocked; return the calls it made."""
    saved_path = list(sys.path)
    fake = {"google": types.ModuleType("google"), "google.colab": types.ModuleType("google.colab")} if in_colab else {}
    try:
        with mock.patch.dict(sys.modules, fake), mock.patch.object(subprocess, "run") as run:
            if not in_colab:
                assert "google.colab" not in sys.modules
            exec(compile(COLAB_CELL, "<colab cell>", "exec"), {})
            return [c.args[0] for c in run.call_args_list]
    finally:
        sys.path[:] = saved_path


def test_outside_colab_the_cell_does_nothing():
    assert run_cell(in_colab=False) == []


def test_in_colab_the_cell_clones_and_installs_the_runtime_only():
    calls = run_cell(in_colab=True)
    assert any(c[:2] == ["git", "clone"] and COURSE_REPO in c and "--depth" in c for c in calls), calls
    pips = [c for c in calls if "pip" in c]
    assert len(pips) == 1 and "install" in pips[0], calls
    for arg in pips[0]:
        assert "[" not in arg, f"the Colab install asks for extras: {arg}"
        assert not any(word in arg.lower() for word in FORBIDDEN), f"the Colab install names {arg}"


def test_the_runtime_dependencies_keep_colab_s_stack():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in deps]
    assert not set(names) & {"jupyterlab", "notebook", "nbgrader"}
    torch = [d for d in deps if d.lower().startswith("torch")]
    assert all("==" not in d and "<" not in d for d in torch), "torch is pinned: Colab's own torch would be replaced"


def test_stamp_script_writes_the_cell_and_is_idempotent(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import stamp_colab_cell
    finally:
        sys.path.pop(0)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("x = 1")])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert stamp_colab_cell.stamp(path) is True
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].source == COLAB_CELL and cells[1].source == "# Title" and len(cells) == 3
    before = path.read_bytes()
    assert stamp_colab_cell.stamp(path) is False and path.read_bytes() == before
