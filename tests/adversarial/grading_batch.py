"""One shared, cached grading batch for the round-trip and adversarial tests (graded once per pytest run).

Students in the batch, every job graded by ``python -m alignlab.grading grade``'s machinery with 2 workers:

- ``solutions``: every solution notebook as submitted           -> full marks
- ``stubs``: every released student notebook, unmodified        -> zero on every graded cell
- ``wrong``: every notebook with each catalogued exercise answered by a wrong implementation from
  tests/catalogue/wrong.py (its other answers from the solution) -> those exercises lose their points
- ``adv_*``: notebook 00 attacked in the ways of ``adversarial.CASES``
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from alignlab.grading import batch, course, results

from . import ASSIGNMENT, CASES

ROOT = course.REPO_ROOT
WORKERS = 2
CELL_TIMEOUT = 180          # seconds per cell: generous, the development machine is shared and slow
SUBMISSION_TIMEOUT = 900    # seconds per submission (the looping cases use a short cell limit of their own)


@dataclass
class Batch:
    course: batch.Course                  # runtime in a temporary folder
    jobs: dict                            # (student, assignment) -> batch.Job
    wrong: dict                           # assignment -> {exercise: mistake label}
    seconds: float                        # wall time of the whole grade() call
    feedback: list                        # feedback HTML paths


def assignments() -> list[str]:
    """Every assignment of solutions/ (ALIGNLAB_TEST_ASSIGNMENTS=00_getting_started,... narrows it while debugging)."""
    names = sorted(p.name for p in (ROOT / "solutions").iterdir() if (p / f"{p.name}.ipynb").exists())
    only = [n for n in os.environ.get("ALIGNLAB_TEST_ASSIGNMENTS", "").split(",") if n]
    return [n for n in names if not only or n in only]


def wrong_choice(exercise: str):
    """The first catalogued wrong implementation that is not "only calls the reference" (tested elsewhere)."""
    from catalogue.wrong import WRONG
    for label, fn in WRONG.get(exercise, []):
        if "reference" not in label:
            return label, fn
    return None


def wrong_notebook(assignment: str) -> tuple[nbformat.NotebookNode, dict]:
    """The student notebook with every catalogued exercise answered wrongly and the rest answered right."""
    from catalogue import cell_source
    student = nbformat.read(ROOT / "notebooks" / assignment / f"{assignment}.ipynb", as_version=4)
    solution = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in solution.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    chosen = {}
    for cell in student.cells:
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("solution"):
            continue
        picked = wrong_choice(meta["grade_id"]) if cell.cell_type == "code" else None
        if picked:
            chosen[meta["grade_id"]] = picked[0]
            cell.source = cell_source(picked[1])
        else:
            cell.source = answers[meta["grade_id"]]
    return student, chosen


def _write(folder: Path, name: str, content) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        (folder / name).write_bytes(content)
    else:
        nbformat.write(content, folder / name)


@functools.lru_cache(maxsize=None)
def graded_batch() -> Batch:
    runtime = Path(tempfile.mkdtemp(prefix="alignlab-grading-"))
    c = batch.Course(runtime=runtime)
    wrong = {}
    for a in assignments():
        name = f"{a}.ipynb"
        shutil.copytree(ROOT / "solutions" / a, c.submitted / "solutions" / a)
        shutil.copytree(ROOT / "notebooks" / a, c.submitted / "stubs" / a)
        nb, wrong[a] = wrong_notebook(a)
        if wrong[a]:
            _write(c.submitted / "wrong" / a, name, nb)
    student = nbformat.read(ROOT / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    for case in CASES:
        _write(c.submitted / case.name / ASSIGNMENT, f"{ASSIGNMENT}.ipynb", case.build(student))
    start = time.perf_counter()
    jobs = batch.collect(c)
    limits = {case.name: case.cell_timeout for case in CASES}
    for job in jobs:
        job.cell_timeout = limits.get(job.student)
    done = batch.grade(c, jobs, workers=WORKERS, timeout=SUBMISSION_TIMEOUT,
                       cell_timeout=CELL_TIMEOUT, progress=False, log=lambda *_: None)
    seconds = time.perf_counter() - start
    pages = results.feedback(c, [(j.student, j.assignment) for j in done if j.result.get("status") == "graded"],
                           log=lambda *_: None)
    results.export(c, done)
    return Batch(c, {(j.student, j.assignment): j for j in done}, wrong, seconds, pages)


def grades(job) -> dict:
    """grade_id -> (auto_score, max_score, reason) of one graded job."""
    return {g["id"]: (g["auto_score"], g["max_score"], g["reason"])
            for nb in job.result.get("notebooks", {}).values() for g in nb["grades"]}


def reason_of(job) -> str:
    return " | ".join(filter(None, [job.result.get("reason", "")] +
                             [r for _, _, r in grades(job).values()]))


def strip(text: str) -> str:
    return re.sub(r"\s+", " ", text)
