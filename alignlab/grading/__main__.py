"""Command line of the course's grading: ``python -m alignlab.grading COMMAND --help``.

    release   regenerate notebooks/ from solutions/ (nbgrader generate_assignment); --check compares instead
    grade     collect (folders or an LMS zip), autograde in parallel, feedback, export
    feedback  regenerate feedback from the gradebook (after manual grading in formgrader)
    export    write grades.csv (and canvas_grades.csv, for Canvas's gradebook import) from the gradebook
    report    the class report: one HTML page per assignment (scores, pass rates, named mistakes, similarity
              flags, submissions to look at), from the gradebook and the judge's records; also the CSVs
"""
from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
import time
from pathlib import Path

from . import course
from .batch import DEFAULT_TIMEOUT_S, DEFAULT_WORKERS, DEFAULT_ZIP_REGEXP, Course, collect, grade, zip_collect
from .release import assignments, release
from .report import write_reports
from .results import export, feedback


def _release(args) -> int:
    names = args.assignment or assignments()
    if not args.check:
        release(names)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        release(names, release_dir=Path(tmp) / "release", db_url=f"sqlite:///{tmp}/gb.db", log=lambda *_: None)
        stale = [n for n in names for p in (Path(tmp) / "release" / n).glob("*.ipynb")
                 if not (course.REPO_ROOT / course.RELEASE_DIR / n / p.name).exists()
                 or not filecmp.cmp(p, course.REPO_ROOT / course.RELEASE_DIR / n / p.name, shallow=False)]
    print("notebooks/ is up to date" if not stale else f"stale: {stale}; run `make release`")
    return 1 if stale else 0


def _course(args):
    # --db-url, else ALIGNLAB_DB_URL, else SQLite in the runtime folder (with --runtime too, as --help says)
    return Course(runtime=args.runtime, db_url=args.db_url or course.configured_db_url())


def _grade(args) -> int:
    c = _course(args)
    if args.zip:
        if len(args.assignment or []) != 1:
            sys.exit("--zip needs exactly one --assignment")
        zip_collect(c, Path(args.zip), args.assignment[0], regexp=args.zip_regexp)
    jobs = collect(c, args.assignment, args.student)
    done = grade(c, jobs, workers=args.workers, timeout=args.timeout, cell_timeout=args.cell_timeout,
                 progress=not args.no_progress)
    if not done:
        return 0
    if not args.no_feedback:
        pages = feedback(c, [(j.student, j.assignment) for j in done if j.result.get("status") == "graded"])
        print(f"feedback: {len(pages)} HTML files under {c.feedback_dir} (checked: no hidden test code)")
    for path in export(c, done):
        print(f"wrote {path}")
    width = max(len(j.student) for j in done)
    for j in done:
        scores = [g for nb in j.result.get("notebooks", {}).values() for g in nb["grades"]]
        total = sum(g["auto_score"] or 0 for g in scores)
        top = sum(g["max_score"] for g in scores)
        print(f"{j.student:<{width}}  {j.assignment}  {j.result['status']:<6}  {total:g}/{top:g}  "
              f"{j.seconds:5.1f}s  {j.result.get('reason', '')}")
    return 0


def _feedback(args) -> int:
    c = _course(args)
    pairs = [(p.parent.name, p.name) for p in sorted(c.autograded.glob("*/*"))
             if (not args.assignment or p.name in args.assignment) and (not args.student or p.parent.name in args.student)]
    pages = feedback(c, pairs)
    print(f"feedback: {len(pages)} HTML files under {c.feedback_dir} (checked: no hidden test code)")
    return 0


def _export(args) -> int:
    for path in export(_course(args)):
        print(f"wrote {path}")
    return 0


def _report(args) -> int:
    start = time.perf_counter()
    c = _course(args)
    pages = write_reports(c, args.assignment)
    for path in pages + export(c):
        print(f"wrote {path}")
    print(f"report: {len(pages)} assignment(s) in {time.perf_counter() - start:.1f} s")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m alignlab.grading", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("release", help="regenerate notebooks/ from solutions/")
    r.add_argument("assignment", nargs="*", help="assignment ids (default: every folder of solutions/)")
    r.add_argument("--check", action="store_true", help="only compare notebooks/ with a fresh release; exit 1 if stale")
    r.set_defaults(run=_release)

    def course_args(q):
        q.add_argument("--assignment", "-a", action="append", help="only this assignment (repeatable)")
        q.add_argument("--student", "-s", action="append", help="only this student (repeatable)")
        q.add_argument("--runtime", help=f"grading state folder (default {course.RUNTIME_DIR})")
        q.add_argument("--db-url", help="gradebook URL, e.g. postgresql://user@host/alignlab "
                                        "(default: ALIGNLAB_DB_URL, else SQLite in the runtime folder)")

    g = sub.add_parser("grade", help="autograde every collected submission in parallel",
                       description="Collect submissions (runtime/submitted/<student>/<assignment>/, or --zip), "
                                   "autograde them in parallel, write verified feedback and grade CSVs.")
    course_args(g)
    g.add_argument("--workers", "-j", type=int, default=DEFAULT_WORKERS, help="parallel worker processes (default %(default)s)")
    g.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="seconds for one whole submission before it is killed and scored 0 (default %(default)s)")
    g.add_argument("--cell-timeout", type=int, default=course.CELL_TIMEOUT_S,
                   help="seconds for one cell before it is interrupted (default %(default)s)")
    g.add_argument("--zip", help="an LMS download (zip) to collect first, with nbgrader's zip_collect")
    g.add_argument("--zip-regexp", default=DEFAULT_ZIP_REGEXP,
                   help="file name pattern with (?P<student_id>...) and (?P<file_id>...) (default: %(default)s)")
    g.add_argument("--no-feedback", action="store_true", help="skip feedback HTML")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(run=_grade)

    f = sub.add_parser("feedback", help="regenerate feedback HTML from the gradebook (e.g. after manual grading)")
    course_args(f)
    f.set_defaults(run=_feedback)

    e = sub.add_parser("export", help="write runtime/exports/grades.csv from the gradebook")
    course_args(e)
    e.set_defaults(run=_export)

    rp = sub.add_parser("report", help="write the class report (runtime/reports/<assignment>.html) and the grade CSVs",
                       description="From the gradebook and the judge's records of the last grade: per assignment, the "
                                   "score distribution, pass rate and named mistakes per exercise, similarity flags "
                                   "with both sources side by side, and the submissions to look at.")
    course_args(rp)
    rp.set_defaults(run=_report)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
