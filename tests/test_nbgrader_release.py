"""notebooks/ is exactly nbgrader's release of solutions/, and gives nothing away.

The fast tests read the committed notebooks; the slow one regenerates the release into a temporary
folder with the course's own command and compares bytes.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from traitlets.config.loader import PyFileConfigLoader

from alignlab.checks.exercises import EXERCISES
from alignlab.grading import course
from alignlab.grading.hidden import MARKERS, hidden_lines, solution_lines
from alignlab.grading.release import assignments, release

ROOT = course.REPO_ROOT
ASSIGNMENTS = assignments()


def solution(a: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "solutions" / a / f"{a}.ipynb", as_version=4)


def student(a: str) -> nbformat.NotebookNode:
    path = ROOT / "notebooks" / a / f"{a}.ipynb"
    assert path.exists(), f"{path} is missing: run `make release`"
    return nbformat.read(path, as_version=4)


def test_there_are_assignments_and_notebook_00_is_one():
    assert "00_getting_started" in ASSIGNMENTS


@pytest.mark.slow
def test_notebooks_equal_a_fresh_release_of_solutions(tmp_path):
    release(ASSIGNMENTS, release_dir=tmp_path / "release", db_url=f"sqlite:///{tmp_path / 'gb.db'}",
            runtime=tmp_path / "runtime", log=lambda *_: None)
    for a in ASSIGNMENTS:
        fresh = sorted(p.name for p in (tmp_path / "release" / a).iterdir())
        committed = sorted(p.name for p in (ROOT / "notebooks" / a).iterdir()) if (ROOT / "notebooks" / a).exists() else []
        assert fresh == committed, f"notebooks/{a} holds {committed}, a release gives {fresh}: run `make release`"
        for name in fresh:
            assert (tmp_path / "release" / a / name).read_bytes() == (ROOT / "notebooks" / a / name).read_bytes(), \
                f"notebooks/{a}/{name} differs from a fresh release of solutions/: run `make release`"


def test_every_released_assignment_has_a_solution():
    released = sorted(p.name for p in (ROOT / "notebooks").iterdir() if p.is_dir())
    assert released == ASSIGNMENTS, "notebooks/ has folders that solutions/ lacks (or the reverse)"


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_student_notebook_has_no_markers_and_no_secret_line(a):
    nb, src = student(a), solution(a)
    text = "\n".join(c.source for c in nb.cells)
    for marker in MARKERS:
        assert marker not in text, f"notebooks/{a}: marker {marker!r} left in the student notebook"
    lines = {line.strip() for line in text.splitlines()}
    for kind, secrets in (("solution", solution_lines(src)), ("hidden test", hidden_lines(src))):
        leaked = sorted(secrets & lines)
        assert not leaked, f"notebooks/{a}: {kind} lines in the student notebook: {leaked[:3]}"


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_student_notebook_has_no_outputs(a):
    for cell in student(a).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"notebooks/{a}: a cell keeps its output"


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_solution_cells_and_test_cells_follow_the_conventions(a):
    """Each code answer cell is followed by locked test cells with points; exercise tests have a hidden region."""
    nb = solution(a)
    assert nb.metadata["kernelspec"]["name"] == course.KERNEL_NAME
    tagged = [(c, c.metadata["nbgrader"]) for c in nb.cells if "grade_id" in c.metadata.get("nbgrader", {})]
    ids = [m["grade_id"] for _, m in tagged]
    assert len(ids) == len(set(ids)), f"{a}: duplicate grade ids"
    for i, (cell, m) in enumerate(tagged):
        if m.get("grade") and cell.cell_type == "code":
            assert m.get("locked") and m.get("points", 0) > 0 and m["grade_id"].startswith("test_"), (a, m)
            if m["grade_id"][len("test_"):] in EXERCISES:       # math exercises; multiple choice needs none
                assert "### BEGIN HIDDEN TESTS" in cell.source and "### END HIDDEN TESTS" in cell.source, \
                    f"{a}: {m['grade_id']} has no hidden region"
        if m.get("solution") and cell.cell_type == "code" and not m.get("grade"):
            after = tagged[i + 1] if i + 1 < len(tagged) else (None, {})
            assert after[1].get("grade") and after[1].get("locked"), \
                f"{a}: answer cell {m['grade_id']} is not followed by a locked test cell"


def test_nbgrader_config_maps_the_course():
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    cd = cfg.CourseDirectory
    assert Path(cd.root) == ROOT
    assert Path(cd.source_directory) == ROOT / "solutions" and Path(cd.release_directory) == ROOT / "notebooks"
    for step in ("submitted_directory", "autograded_directory", "feedback_directory"):
        assert Path(cd[step]).is_relative_to(ROOT / "autograder" / "runtime"), step
    assert cd.db_url.endswith("autograder/runtime/gradebook.db") or cd.db_url.startswith("postgres")
    assert cfg.Execute.kernel_name == "python3" and cfg.Execute.timeout >= 30
    assert cfg.OverwriteCells.add_missing_cells is True
    assert cfg.IgnorePattern.enabled and cfg.IgnorePattern.pattern
    assert "autograder/runtime/" in (ROOT / ".gitignore").read_text()


def test_a_fresh_clone_gets_its_gradebook_folder(tmp_path, monkeypatch):
    """SQLite makes the file, not the folder: without this, formgrader answers 500 on a fresh clone."""
    from traitlets.config import Config
    monkeypatch.delenv("ALIGNLAB_DB_URL", raising=False)
    (tmp_path / "solutions").mkdir()
    c = Config()
    course.apply(c, root=tmp_path)
    assert (tmp_path / "autograder" / "runtime").is_dir()
    assert c.CourseDirectory.db_url == f"sqlite:///{tmp_path.resolve() / 'autograder' / 'runtime' / 'gradebook.db'}"


def test_ignore_pattern_drops_warnings_and_progress_bars_only():
    import re
    noise = ["/x.py:3: UserWarning: careful\n  warnings.warn(", "\r 40%|####      | 4/10 [00:01<00:02, 3.1it/s]"]
    for text in noise:
        assert re.search(course.IGNORE_STDERR, text), text
    assert not re.search(course.IGNORE_STDERR, "Traceback (most recent call last):\nValueError: bad")
