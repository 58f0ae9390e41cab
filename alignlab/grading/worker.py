"""Autograde ONE submission in an isolated scratch course: ``python -m alignlab.grading.worker JOB.json``.

The parallel grader (``batch.py``) runs ``run_job`` in one fresh process per submission (forked from a
server that has nbgrader imported already, so a worker starts in milliseconds). Everything it writes stays in
``work_dir``: a copy of the submission, a private copy of the template gradebook, the autograded notebook
and ``result.json``. The main gradebook is never opened here, so a crash, a hang or a kill of this process
cannot corrupt it or another student's grade; ``batch.py`` imports the result afterwards, in one process.

JOB.json: {"student", "assignment", "submission" (folder), "work_dir", "template_db", "cell_timeout", "threads",
"uid", "env" (variables for the kernel: the judge session's socket)}. It never holds the hidden seed: only the judge, in the grade process, does.
Isolation (becoming the submission's uid, the environment the kernel inherits) is ``sandbox.enter``'s.
result.json: {"status": "graded"|"failed", "reason", "notebooks": {nb: {"grades": [...], "comments": [...]}}}.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import traceback
import warnings
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook
from nbgrader.apps import NbGraderAPI

from . import course, sandbox
from .release import make_config, nbgrader_env

REASON_LEN = 300


def _copy_submission(src: Path, dst: Path) -> list[str]:
    """Copy the submission folder; return problems with its notebooks (unreadable files), if any."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    problems = []
    for path in sorted(dst.glob("*.ipynb")):
        try:
            nbformat.read(path, as_version=4)
        except Exception as exc:  # not JSON, not a notebook, truncated upload
            problems.append(f"{path.name} is not a readable notebook ({type(exc).__name__}: {str(exc)[:120]})")
    return problems


def cell_reason(cell) -> str:
    """Why a graded cell lost its points, from its outputs: the error's name and first line of its message."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error" and out.get("ename") == "KeyboardInterrupt":
            return "timed out: the cell ran past the grader's time limit and was interrupted (an endless loop?)"
        if out.get("output_type") == "error":
            first = (out.get("evalue") or "").strip().splitlines()
            return f"{out.get('ename')}: {first[0] if first else ''}"[:REASON_LEN]
    return ""


def cell_reasons(nb) -> dict[str, str]:
    """grade_id -> reason, for every nbgrader cell; a failing test after a failing answer cell names both."""
    out, earlier = {}, ""
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        reason = cell_reason(cell)
        if meta.get("grade") and meta.get("grade_id"):
            if reason and earlier:
                reason = f"{reason} (after an error in your cell {earlier})"
            out[meta["grade_id"]] = reason[:REASON_LEN]
            earlier = ""
        elif reason and cell.cell_type == "code" and meta.get("solution") and not earlier:
            earlier = f"{meta['grade_id']}: {reason}"
    return out


def read_results(db_url: str, assignment: str, student: str, autograded: Path) -> dict:
    """Scores and comments of one submission from a gradebook, with a reason for every lost point."""
    notebooks = {}
    with Gradebook(db_url, "alignlab") as gb:
        submission = gb.find_submission(assignment, student)
        for nb in submission.notebooks:
            reasons = cell_reasons(nbformat.read(autograded / f"{nb.name}.ipynb", as_version=4)) \
                if (autograded / f"{nb.name}.ipynb").exists() else {}
            grades = []
            for g in nb.grades:
                reason = reasons.get(g.name, "cell missing from the graded notebook")
                grades.append({"id": g.name, "auto_score": g.auto_score, "max_score": g.max_score,
                               "reason": "" if g.auto_score == g.max_score else reason})
            comments = [{"id": c.name, "auto_comment": c.auto_comment} for c in nb.comments]
            notebooks[nb.name] = {"grades": grades, "comments": comments}
    return notebooks


def grade(job: dict) -> dict:
    """Run nbgrader's autograde on the job's submission inside ``work_dir``; return the result dict."""
    nbgrader_env()
    work = Path(job["work_dir"])
    student, assignment = job["student"], job["assignment"]
    runtime = work / "runtime"
    if runtime.exists():
        shutil.rmtree(runtime)
    runtime.mkdir(parents=True)
    shutil.copy(job["template_db"], runtime / "gradebook.db")
    problems = _copy_submission(Path(job["submission"]), runtime / "submitted" / student / assignment)
    if problems:
        return {"status": "failed", "reason": "; ".join(problems), "notebooks": {}}

    c = make_config(runtime=runtime, cell_timeout=job.get("cell_timeout", course.CELL_TIMEOUT_S))
    api = NbGraderAPI(config=c)
    out = api.autograde(assignment, student, force=True, create=True)
    (work / "autograde.log").write_text(str(out.get("log", "")) + "\n" + str(out.get("error", "")))
    autograded = runtime / "autograded" / student / assignment
    if not out["success"] or not autograded.exists():
        last = [line for line in str(out.get("log", "")).splitlines() if "Error" in line or "error" in line]
        return {"status": "failed", "notebooks": {},
                "reason": ("nbgrader could not grade it: " + (last[-1] if last else "see autograde.log"))[:REASON_LEN]}
    return {"status": "graded", "reason": "",
            "notebooks": read_results(c.CourseDirectory.db_url, assignment, student, autograded)}


def run_job(job_file: str) -> int:
    """Grade the job described in ``job_file``; write result.json next to it. Output goes to worker.log."""
    job = json.loads(Path(job_file).read_text())
    # the submission's own uid, and an environment (which the kernel inherits) without the grader's secrets, plus
    # the job's own variables (the judge's socket: the kernel's checks ask the judge, outside this uid, for cases)
    sandbox.enter(job, job.get("env", {}))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):        # the kernel inherits them: workers share the cores
        os.environ.setdefault(var, str(job.get("threads", 1)))
    result_path = Path(job["work_dir"]) / "result.json"
    log = os.open(Path(job["work_dir"]) / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    warnings.filterwarnings("ignore", module="sqlalchemy")
    try:
        result = grade(job)
    except Exception as exc:
        result = {"status": "failed", "notebooks": {},
                  "reason": f"grader error: {type(exc).__name__}: {exc}"[:REASON_LEN],
                  "traceback": traceback.format_exc()}
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu_seconds"] = round(own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime, 1)
    result_path.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(sys.argv[1]))
