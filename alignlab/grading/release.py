"""Release: regenerate notebooks/NN_name/ from solutions/NN_name/ with nbgrader's generate_assignment.

Deterministic (same solutions, same bytes) and output-free. The gradebook learns each assignment's source
cells at the same time, which is what autograding restores locked and missing cells from.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from nbgrader.apps import NbGraderAPI
from traitlets.config import Config

from . import course


def nbgrader_env() -> None:
    """nbgrader shells out to ``alembic`` for new gradebooks: put this Python's bin folder first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    if not os.environ.get("PATH", "").startswith(bin_dir + os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def assignments(root: Path | str = course.REPO_ROOT) -> list[str]:
    """Assignment ids: the folders of solutions/ that hold a notebook of the same name."""
    src = Path(root) / course.SOURCE_DIR
    return sorted(p.name for p in src.iterdir() if (p / f"{p.name}.ipynb").exists()) if src.exists() else []


def completed_student_notebook(name: str, root: Path | str = course.REPO_ROOT) -> dict:
    """The student notebook with each answer cell replaced by the solution's answer: a learner who finished.

    Code answers and written (Markdown) answers alike, so nbgrader sees every answer changed from its stub
    (an unchanged written answer is scored 0 automatically). A plain notebook dict.
    """
    root = Path(root)
    student = json.loads((root / course.RELEASE_DIR / name / f"{name}.ipynb").read_text())
    solution = json.loads((root / course.SOURCE_DIR / name / f"{name}.ipynb").read_text())
    answers = {}
    for cell in solution["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            src = "".join(cell["source"]).splitlines()
            answers[meta["grade_id"]] = "\n".join(line for line in src if "### BEGIN SOLUTION" not in line
                                                  and "### END SOLUTION" not in line)
    for cell in student["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade_id") in answers:
            cell["source"] = answers[meta["grade_id"]]
    return student


def make_config(root=course.REPO_ROOT, runtime=None, db_url=None, release_dir=None, cell_timeout=None):
    c = Config()
    kwargs = {} if cell_timeout is None else {"cell_timeout": cell_timeout}
    course.apply(c, root=root, runtime=runtime, db_url=db_url, **kwargs)
    if release_dir is not None:
        c.CourseDirectory.release_directory = str(Path(release_dir).resolve())
    return c


def release(names: list[str] | None = None, release_dir=None, db_url=None, runtime=None, log=print) -> list[Path]:
    """Generate the student notebooks of ``names`` (default: all) into ``release_dir`` (default notebooks/).

    ``db_url`` is the gradebook to record the assignments in (default: the course gradebook).
    Returns the written notebook paths. Raises RuntimeError with nbgrader's log when a notebook fails.
    """
    nbgrader_env()
    names = names or assignments()
    c = make_config(runtime=runtime, db_url=db_url, release_dir=release_dir)
    Path(c.CourseDirectory.db_url.replace("sqlite:///", "")).parent.mkdir(parents=True, exist_ok=True) \
        if c.CourseDirectory.db_url.startswith("sqlite:///") else None
    api = NbGraderAPI(config=c)
    out_root = Path(c.CourseDirectory.release_directory)
    written = []
    for name in names:
        result = api.generate_assignment(name, force=True, create=True)
        if not result["success"]:
            raise RuntimeError(f"generate_assignment {name} failed:\n{result['error']}\n{result['log']}")
        written += sorted((out_root / name).glob("*.ipynb"))
        log(f"released {name} -> {out_root / name}")
    return written
