"""Collect submissions and grade them in parallel without ever risking the gradebook (feedback and CSVs: results.py).

Design: each submission is autograded by its own worker process (``worker.py``) in a scratch course under
``runtime/work/<student>__<assignment>/`` with a private copy of a *template* gradebook (the assignment's
source cells, made once per batch). Up to ``workers`` run at a time, each under a wall-clock timeout after
which its whole process tree (nbgrader and the kernel) is killed. Isolation is ``sandbox.py``'s (prepare the
workspace and its uid here, enter it in the worker and the kernel, reap every process of the uid afterwards).
The truth is the judge's (``judge.py``): this process holds the hidden seed and one judge session per submission,
whose records, not the kernel's outputs, give each test cell its score. The references are hashed in memory
before the batch and checked after every submission (sandboxed, a change is someone regenerating them: a
warning, and grading goes on; not sandboxed, the submission that ran meanwhile is failed and flagged). Only this
parent process writes the main gradebook, one result at a time as they arrive: it sets the automatic scores and
comments and never touches manual scores or manual comments, so re-grading keeps every grade given in formgrader.
A submission whose worker fails, hangs or dies is recorded with score 0, flagged for review, with its reason; the
others are unaffected. The main gradebook can be SQLite or PostgreSQL (``db_url``).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import re
import tempfile
import threading
import shutil
import subprocess
import warnings
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from multiprocessing import forkserver
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.utils import parse_utc
from tqdm.auto import tqdm

from ..checks._wire import JUDGE_ENV
from . import course, sandbox
from .judge import HIDDEN_SEED_ENV, HIDDEN_SEED_FILE, Judge, Session, apply_verdicts, hidden_seed, save_records
from .release import assignments as all_assignments
from .release import make_config, nbgrader_env, release
from .worker import REASON_LEN, run_job

warnings.filterwarnings("ignore", module="sqlalchemy")
warnings.filterwarnings("ignore", message=".*not in session.*")

DEFAULT_WORKERS = 2
DEFAULT_TIMEOUT_S = 300          # one whole submission (every notebook of the assignment)
# nbgrader matches it against the extracted file's whole path: "<student>_[late_][<digits>_...]NN[a-z]_name.ipynb"
DEFAULT_ZIP_REGEXP = r".*/(?P<student_id>[^_/]+)_(?:late_)?(?:\d+_)*(?P<file_id>\d\d[a-z]?_\w+\.ipynb)$"


@dataclass
class Job:
    student: str                 # student id (folder name under submitted/)
    assignment: str              # assignment id, e.g. "00_getting_started"
    submission: Path             # the submitted folder
    result: dict = field(default_factory=dict)   # filled in by the worker (see worker.py)
    seconds: float = 0.0         # wall time of the worker
    cell_timeout: int | None = None   # this submission's cell time limit (default: the batch's)
    judge: Any = None            # the judge's session of this submission (its records decide the test cells' scores)


class Course:
    """The main course state: config, runtime folder, gradebook url."""

    def __init__(self, runtime: Path | str | None = None, db_url: str | None = None):
        self.runtime = Path(runtime).resolve() if runtime else course.runtime_dir()
        self.config = make_config(runtime=self.runtime, db_url=db_url)
        self.db_url = self.config.CourseDirectory.db_url
        self.submitted = self.runtime / "submitted"
        self.autograded = self.runtime / "autograded"
        self.feedback_dir = self.runtime / "feedback"
        self.exports = self.runtime / "exports"
        self.work = self.runtime / "work"

    def gradebook(self):
        return Gradebook(self.db_url, "alignlab")

    def has_assignment(self, name: str) -> bool:
        with self.gradebook() as gb:
            try:
                gb.find_assignment(name)
                return True
            except MissingEntry:
                return False


# ------------------------------------------------------------------ collect
def collect(c: Course, assignments=None, students=None) -> list[Job]:
    """Every submitted/<student>/<assignment>/ folder, filtered by the given ids."""
    jobs = []
    for folder in sorted(c.submitted.glob("*/*")):
        if folder.is_dir() and (not assignments or folder.name in assignments) \
                and (not students or folder.parent.name in students):
            jobs.append(Job(folder.parent.name, folder.name, folder))
    return jobs


def unusable_zip_entries(zip_path: Path, regexp: str = DEFAULT_ZIP_REGEXP) -> list[str]:
    """Notebooks of an LMS zip that nbgrader's zip_collect would drop silently: the file name gives a student id
    that cannot be a folder ("." or "..", or holding a path separator), or does not match ``regexp`` at all."""
    bad = []
    with zipfile.ZipFile(zip_path) as z:
        for name in z.namelist():
            if not name.endswith(".ipynb") or "__MACOSX" in name:
                continue
            m = re.match(regexp, "/archive/" + name.split("/")[-1])
            sid = m.group("student_id") if m else None
            if sid is None:
                bad.append(f"{name}: its name does not match the pattern (no student id)")
            elif sid in (".", "..") or "/" in sid or "\\" in sid or not sid.strip():
                bad.append(f"{name}: student id {sid!r} cannot be a folder name")
    return bad


def zip_collect(c: Course, zip_path: Path, assignment: str, regexp: str = DEFAULT_ZIP_REGEXP, log=print) -> list[str]:
    """Unpack an LMS download (zip of notebooks named per student) into submitted/ with nbgrader's zip_collect."""
    archive = c.runtime / "downloaded" / assignment / "archive"
    archive.mkdir(parents=True, exist_ok=True)
    shutil.copy(zip_path, archive / Path(zip_path).name)
    cmd = [sys.executable, "-m", "nbgrader", "zip_collect", assignment, "--force",
           # nbgrader joins root + "/" + this by hand: it must be relative to the course root
           f"--ZipCollectApp.downloaded_directory={os.path.relpath(c.runtime / 'downloaded', course.REPO_ROOT)}",
           f"--CourseDirectory.submitted_directory={c.submitted}",
           f"--FileNameCollectorPlugin.named_regexp={regexp}"]
    out = subprocess.run(cmd, cwd=course.REPO_ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"nbgrader zip_collect failed:\n{out.stdout}\n{out.stderr}")
    log(f"collected {zip_path} into {c.submitted}")
    bad = unusable_zip_entries(zip_path, regexp)
    for problem in bad:
        log(f"WARNING: NOT collected, grade it by hand: {problem}")
    return bad


# ------------------------------------------------------------------ run the workers
_CONTEXT = None


_CONTEXT_LOCK = threading.Lock()


def _context():
    """Workers fork from a clean single-threaded server that has nbgrader imported once (saves ~5 s each). The
    server starts without the hidden seed in its environment (it is the judge's alone)."""
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["alignlab.grading.worker", "nbgrader.apps", "nbgrader.api",
                                            "nbgrader.preprocessors", "nbconvert", "nbclient"])
            saved = os.environ.pop(HIDDEN_SEED_ENV, None)
            try:
                forkserver.ensure_running()
            finally:
                if saved is not None:
                    os.environ[HIDDEN_SEED_ENV] = saved
            _CONTEXT = context
    return _CONTEXT


def run_one(job: Job, work: Path, template_db: Path, timeout: float, cell_timeout: int, threads: int = 1,
            judge: Judge | None = None, judge_dir: Path | None = None) -> Job:
    """Grade one submission in a worker process; always returns, with ``job.result`` and ``job.judge`` set.

    ``judge``: the batch's judge (default: one with the course's seed, ``judge.hidden_seed`` of ``work``'s runtime);
    ``judge_dir``: where the judge's sockets go (default: a new temporary folder).
    ``threads``: the kernel's CPU threads (OMP_NUM_THREADS, unless already set): workers x threads should not
    exceed the cores, or torch's threads spin against each other and every submission slows down many times.
    """
    try:
        return _run_one(job, work, template_db, timeout, cell_timeout, threads,
                        judge or Judge(hidden_seed(Path(work).parent)), judge_dir)
    except Exception as exc:                                     # e.g. the scratch folder cannot be made
        job.result = {"status": "failed", "notebooks": {},
                      "reason": f"the grader could not run this submission: {type(exc).__name__}: {exc}"}
        return job


def sandbox_status() -> str | None:
    """None when submissions run as their own unprivileged uid here, else why not (``sandbox.status``)."""
    return sandbox.status()


def sandboxed() -> bool:
    """Whether submissions run as their own unprivileged uid (the grader must be root for that)."""
    return sandbox.available()


_SESSIONS = itertools.count()


def _run_one(job: Job, work: Path, template_db: Path, timeout: float, cell_timeout: int, threads: int,
             judge: Judge, judge_dir: Path | None) -> Job:
    wdir = work / f"{job.student}__{job.assignment}"
    own_dir = judge_dir is None
    judge_dir = Path(tempfile.mkdtemp(prefix="alignlab-judge-")) if own_dir else judge_dir
    os.chmod(judge_dir, 0o711)
    name = str(next(_SESSIONS))
    uid = sandbox.prepare(wdir, job.submission, template_db, {
        "student": job.student, "assignment": job.assignment, "cell_timeout": job.cell_timeout or cell_timeout,
        "threads": threads, "env": {JUDGE_ENV: str(Path(judge_dir) / f"{name}.sock")}})
    job.judge = Session(judge, judge_dir, uid=uid, name=name)
    start = time.perf_counter()
    try:
        proc = _context().Process(target=run_job, args=(str(wdir / "job.json"),), name=f"grade-{job.student}")
        proc.start()
        job.judge.set_worker(proc.pid)                # only this process may tell the judge which cell runs
        proc.join(timeout)
        if proc.is_alive():
            sandbox.kill_tree(proc.pid)
            proc.join(10)
            job.result = {"status": "failed", "notebooks": {},
                          "reason": f"timed out: grading took longer than {timeout:.0f} s (an endless loop?)"}
        sandbox.reap(uid, proc.pid if proc.is_alive() else None)   # whatever the submission left running
        proc.close() if not proc.is_alive() else None
    finally:
        job.judge.close()                             # its records stay: they are the grade
        if own_dir:
            shutil.rmtree(judge_dir, ignore_errors=True)
    job.seconds = time.perf_counter() - start
    if not job.result:
        try:
            job.result = json.loads((wdir / "result.json").read_text())
            if not isinstance(job.result, dict):
                raise ValueError("not a result")
        except (OSError, ValueError):
            job.result = {"status": "failed", "notebooks": {},
                          "reason": f"the grading worker crashed; see {wdir / 'worker.log'}"}
    return job


def template_gradebook(c: Course, assignments: list[str], log=print) -> Path:
    """A gradebook holding the assignments' source cells (what workers restore locked cells from).

    Made once from solutions/ and reused while solutions/ is unchanged. The main gradebook gets any
    assignment it lacks the same way (a fresh SQLite gradebook is simply a copy of the template).
    """
    names = sorted(set(assignments) | set(all_assignments()))
    src = Path(c.config.CourseDirectory.source_directory)
    digest = hashlib.sha256(b"".join(p.read_bytes() for a in names for p in sorted((src / a).glob("*.ipynb"))))
    key = digest.hexdigest() + " " + " ".join(names)
    db, stamp = c.work / "template.db", c.work / "template.key"
    if not (db.exists() and stamp.exists() and stamp.read_text() == key):
        if db.exists():
            db.unlink()
        release(names, release_dir=c.work / "release", db_url=f"sqlite:///{db}", runtime=c.runtime,
                log=lambda *_: None)
        stamp.write_text(key)
    main = Path(c.db_url[len("sqlite:///"):]) if c.db_url.startswith("sqlite:///") else None
    if main is not None and not main.exists():
        main.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(db, main)                        # a new course: start from the template
    missing = [a for a in assignments if not c.has_assignment(a)]
    if missing:
        log(f"adding {missing} to the gradebook (as `make release` would)")
        release(missing, release_dir=c.work / "release-main", db_url=c.db_url, runtime=c.runtime, log=lambda *_: None)
    return db


REFERENCES = course.REPO_ROOT / "autograder" / "references"
def reference_hashes() -> dict[str, str]:
    """sha256 of every reference file, computed here (the grader's memory), not read from the manifest."""
    return {str(p.relative_to(REFERENCES)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(REFERENCES.rglob("*")) if p.is_file()}


def uncommitted_references(hashes: dict[str, str] | None = None) -> list[str]:
    """Reference files that differ from the committed tree (git's blob hashes of HEAD), [] outside a checkout."""
    try:
        out = subprocess.run(["git", "ls-tree", "-r", "HEAD", "--", "autograder/references"], cwd=course.REPO_ROOT,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0 or not out.stdout.strip():
        return []
    committed = {}
    for line in out.stdout.splitlines():
        meta, path = line.split("\t", 1)
        committed[str(Path(path).relative_to("autograder/references"))] = meta.split()[2]
    local = {}
    for p in sorted(REFERENCES.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            local[str(p.relative_to(REFERENCES))] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return sorted(k for k in set(committed) | set(local) if committed.get(k) != local.get(k))


def lock_down(c: Course) -> None:
    """The runtime's grading state made root's: no submission's uid can read or write it (``sandbox.lock_down``)."""
    os.chmod(c.work, 0o711)
    sandbox.lock_down(c.runtime, [c.work / "template.db", c.work / "template.key", c.runtime / HIDDEN_SEED_FILE] +
                      ([Path(c.db_url[len("sqlite:///"):])] if c.db_url.startswith("sqlite:///") else []),
                      [c.submitted, c.autograded, c.feedback_dir, c.exports, c.runtime / JUDGE_RECORDS,
                       c.runtime / REPORTS, c.work / "release", c.work / "release-main"])


# ------------------------------------------------------------------ import results
def submission_timestamp(folder: Path):
    """The submission time from nbgrader's timestamp.txt (written by collect/zip_collect), or None."""
    try:
        return parse_utc((folder / "timestamp.txt").read_text().strip())
    except (OSError, ValueError):
        return None


def graded_cells(c: Course, assignment: str) -> dict[str, dict[str, tuple[str, float, bool]]]:
    """notebook -> grade_id -> (source, points, manual) of every graded cell of the assignment's source notebooks
    (the instructor's, not the submission's: test cells as the gradebook restores them, hidden tests included)."""
    out = {}
    for path in sorted((Path(c.config.CourseDirectory.source_directory) / assignment).glob("*.ipynb")):
        cells = {}
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and meta.get("grade_id"):
                cells[meta["grade_id"]] = (cell.source, float(meta.get("points", 0)), bool(meta.get("solution")))
        out[path.stem] = cells
    return out


JUDGE_RECORDS = "judge"          # runtime/judge/<assignment>/<student>.json: the judge's records (for the class report)
REPORTS = "reports"              # runtime/reports/<assignment>.html: the class reports (every student's code: root's only)


def judge_verdicts(c: Course, job: Job) -> dict:
    """notebook -> grade_id -> the judge's Verdict on each test cell; also puts the judge's scores and reasons into
    ``job.result`` (the kernel's own outcome is kept as ``kernel_score``)."""
    if job.judge is None:
        return {}
    verdicts = {}
    for nb_name, cells in graded_cells(c, job.assignment).items():
        judged = {gid: job.judge.cell_verdict(src, gid) for gid, (src, _, manual) in cells.items() if not manual}
        verdicts[nb_name] = {gid: v for gid, v in judged.items() if v is not None}
        for g in job.result.get("notebooks", {}).get(nb_name, {}).get("grades", []):
            v = verdicts[nb_name].get(g["id"])
            if cells.get(g["id"], (None, None, False))[2]:
                g["auto_score"] = None                       # a written answer: graded by hand, whatever a worker says
            if v is None:
                continue
            g["kernel_score"] = g["auto_score"]
            g["auto_score"] = g["max_score"] if v.passed else 0.0
            unreached = all(r.endswith("never reached the judge") for r in v.reason.split("; "))
            g["reason"] = "" if v.passed else (
                f"{g['reason']} (no verdict from the judge: the check did not run)" if unreached and g.get("reason")
                else f"AssertionError: {v.reason}")[:REASON_LEN]
    return verdicts


def import_result(c: Course, job: Job) -> None:
    """Write one submission's automatic scores into the main gradebook: for every test cell the judge's verdict,
    whatever the kernel showed; manual scores are never touched. The graded notebook gets the verdicts written in."""
    ok = job.result.get("status") == "graded"
    verdicts = judge_verdicts(c, job) if ok else {}
    with c.gradebook() as gb:
        gb.update_or_create_student(job.student)
        stamp = submission_timestamp(job.submission)
        submission = gb.update_or_create_submission(job.assignment, job.student, **({"timestamp": stamp} if stamp else {}))
        for nb in submission.notebooks:
            got = job.result.get("notebooks", {}).get(nb.name, {})
            scores = {g["id"]: g["auto_score"] for g in got.get("grades", [])}
            comments = {x["id"]: x["auto_comment"] for x in got.get("comments", [])}
            for grade in nb.grades:
                judged = verdicts.get(nb.name, {}).get(grade.name)
                grade.auto_score = (grade.max_score if judged.passed else 0.0) if judged is not None \
                    else scores.get(grade.name, 0.0 if not ok else None)
                grade.needs_manual_grade = (not ok) or grade.manual_score is not None or grade.auto_score is None
            for comment in nb.comments:
                comment.auto_comment = comments.get(comment.name) if ok else f"Not graded automatically: {job.result.get('reason')}"
            nb.flagged = nb.flagged or not ok
        gb.db.commit()
    dest = c.autograded / job.student / job.assignment
    if dest.exists():
        shutil.rmtree(dest)
    src = c.work / f"{job.student}__{job.assignment}" / "runtime" / "autograded" / job.student / job.assignment
    if ok and src.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dest))
        cells = graded_cells(c, job.assignment)
        for nb_name, judged in verdicts.items():
            path = dest / f"{nb_name}.ipynb"
            if judged and path.exists():
                notebook = nbformat.read(path, as_version=4)
                apply_verdicts(notebook, judged, {gid: pts for gid, (_, pts, _) in cells.get(nb_name, {}).items()})
                nbformat.write(notebook, path)
    if job.judge is not None:
        save_records(c.runtime / JUDGE_RECORDS / job.assignment / f"{job.student}.json", job.judge,
                     {gid: v for judged in verdicts.values() for gid, v in judged.items()},
                     {"student": job.student, "assignment": job.assignment, "status": job.result.get("status"),
                      "reason": job.result.get("reason", ""), "seconds": round(job.seconds, 1)})


def grade(c: Course, jobs: list[Job], workers: int = DEFAULT_WORKERS, timeout: float = DEFAULT_TIMEOUT_S,
          cell_timeout: int = course.CELL_TIMEOUT_S, progress: bool = True, log=print) -> list[Job]:
    """Autograde ``jobs`` with ``workers`` processes, importing each result into the gradebook as it arrives."""
    nbgrader_env()
    if not jobs:
        log(f"nothing to grade under {c.submitted}")
        return []
    c.work.mkdir(parents=True, exist_ok=True)
    template = template_gradebook(c, sorted({j.assignment for j in jobs}), log=log)
    judge = Judge(hidden_seed(c.runtime))                 # the truth stays here, in the grade process
    judge_dir = Path(tempfile.mkdtemp(prefix="alignlab-judge-"))
    (c.runtime / JUDGE_RECORDS).mkdir(mode=0o700, exist_ok=True)
    if sandboxed():
        lock_down(c)
    else:
        log(f"WARNING: submissions are NOT isolated: {sandbox_status()}; a kernel runs as you and can "
            "write the gradebook, the references and other workspaces (see autograder/README.md, Isolation)")
    refs = reference_hashes()
    changed = uncommitted_references()
    if changed:
        log(f"WARNING: autograder/references differs from the committed tree ({', '.join(changed[:3])}"
            f"{' ...' if len(changed) > 3 else ''}): grading against uncommitted references; "
            "`git checkout -- autograder/references` unless you regenerated them on purpose")
    done = []
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(jobs), desc="autograding", unit="submission", disable=not progress) as bar:
        threads = max(1, (os.cpu_count() or 1) // max(1, workers))
        futures = {pool.submit(run_one, j, c.work, template, timeout, cell_timeout, threads, judge, judge_dir): j
                   for j in jobs}
        for fut in as_completed(futures):
            job = fut.result()                                   # run_one never raises
            now = reference_hashes()
            changed = sorted(k for k in set(refs) | set(now) if refs.get(k) != now.get(k))
            if changed:
                # sandboxed, no kernel can write them: someone regenerated them (warn). Otherwise this
                # submission's kernel may have: it is failed and flagged for review, the batch goes on.
                what = f"autograder/references changed while grading ({', '.join(changed[:3])})"
                if not sandboxed():
                    job.result = {**job.result, "status": "failed", "notebooks": job.result.get("notebooks", {}),
                                  "reason": f"{what} while this submission ran; check it and re-grade"}
                log(f"WARNING: {what}, after {job.student}/{job.assignment}")
                refs = now
            try:
                import_result(c, job)
            except Exception as exc:                             # one bad result must not stop the batch
                job.result = {**job.result, "status": "failed",
                              "reason": f"its result could not be stored in the gradebook: {type(exc).__name__}: {exc}"}
                log(f"{job.student}/{job.assignment}: {job.result['reason']}")
            done.append(job)
            bar.set_postfix_str(f"{job.student}: {job.result.get('status')}")
            bar.update(1)
    shutil.rmtree(judge_dir, ignore_errors=True)
    return sorted(done, key=lambda j: (j.assignment, j.student))
