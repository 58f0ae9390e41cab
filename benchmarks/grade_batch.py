"""Autograding time of a batch of finished submissions, through the course's own `grade` command.

    .venv/bin/python benchmarks/grade_batch.py [--assignment 00_getting_started | --all] [--students 8] [--workers 2]

Builds N fake students, each submitting the finished student notebook (the released notebook with the
solution's code in its answer cells, ``alignlab.grading.release.completed_student_notebook``), in a
temporary course runtime (autograder/runtime/ of the checkout is never touched), then runs
``python -m alignlab.grading grade`` in-process (what ``make grade`` runs: parallel workers, gradebook
import, feedback, CSV export). The assignment's template gradebook is built before the clock starts.
Prints the batch's wall time, the mean per submission, worker wall and CPU seconds, the worker and CPU
counts and the load average, and checks that every submission got full automatic marks (exit 1 if one
did not). The result goes to benchmarks/results/grade_batch.json (overwritten, like run_all.py's).
On a shared machine the wall times include the other processes' load: read the load average with them.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from calibrate import calibration, machine_line
from run_all import RESULTS

from alignlab.grading import __main__ as cli
from alignlab.grading import batch, results
from alignlab.grading.release import assignments as all_assignments
from alignlab.grading.release import completed_student_notebook


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class LoadSampler(threading.Thread):
    """The 1-minute load average every few seconds while the batch runs (its maximum is reported)."""

    def __init__(self, every: float = 5.0):
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()

    def run(self):
        while not self.stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])


def timed(name: str, fn, into: dict):
    """``fn`` recording its wall time and return value under ``name`` (to split the grade command's phases)."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        into[name] = (time.perf_counter() - start, out)
        return out
    return wrapper


def check_full_marks(done: list, grades_csv: Path) -> list[str]:
    """Every way a submission fell short of full automatic marks (empty: all full)."""
    problems = []
    exported = {(r["student_id"], r["assignment"]): float(r["score"]) for r in csv.DictReader(open(grades_csv))}
    for j in done:
        who = f"{j.student}/{j.assignment}"
        if j.result.get("status") != "graded":
            problems.append(f"{who}: status {j.result.get('status')}: {j.result.get('reason')}")
            continue
        cells = [g for nb in j.result.get("notebooks", {}).values() for g in nb["grades"]]
        auto = [g for g in cells if g["auto_score"] is not None]      # None: a written answer, graded by hand
        if not auto:
            problems.append(f"{who}: no automatically graded cell")
        for g in auto:
            if g["auto_score"] != g["max_score"]:
                problems.append(f"{who}: {g['id']} {g['auto_score']}/{g['max_score']} {g.get('reason', '')}")
        total = sum(g["auto_score"] for g in auto)
        if exported.get((j.student, j.assignment)) != total:
            problems.append(f"{who}: grades.csv has {exported.get((j.student, j.assignment))}, the worker {total}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--assignment", "-a", default="00_getting_started", help="assignment id (default %(default)s)")
    which.add_argument("--all", action="store_true", help="every assignment under solutions/, in one batch")
    parser.add_argument("--students", "-n", type=int, default=8, help="fake students (default %(default)s)")
    parser.add_argument("--workers", "-j", type=int, default=batch.DEFAULT_WORKERS,
                        help="parallel grading workers (default %(default)s, as `make grade`)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary runtime folder (its path is printed)")
    parser.add_argument("--out", default=str(RESULTS / "grade_batch.json"), help="results file (default %(default)s)")
    args = parser.parse_args()

    names = all_assignments() if args.all else [args.assignment]
    missing = [a for a in names if a not in all_assignments()]
    if missing:
        parser.error(f"no such assignment under solutions/: {missing}")
    runtime = Path(tempfile.mkdtemp(prefix="alignlab-grade-bench-"))
    db_url = f"sqlite:///{runtime / 'gradebook.db'}"        # explicit: never ALIGNLAB_DB_URL's gradebook
    c = batch.Course(runtime=runtime, db_url=db_url)
    students = [f"student{i:02d}" for i in range(1, args.students + 1)]
    for a in names:
        text = json.dumps(completed_student_notebook(a), indent=1)
        for s in students:
            (c.submitted / s / a).mkdir(parents=True)
            (c.submitted / s / a / f"{a}.ipynb").write_text(text)

    start = time.perf_counter()
    batch.nbgrader_env()
    batch.template_gradebook(c, names, log=lambda *_: None)     # once per course, cached: not part of a batch
    setup_s = time.perf_counter() - start

    phases = {}
    real_grade, real_feedback = batch.grade, results.feedback
    # the command line imports grade and feedback by name: time them where it calls them
    cli.grade, cli.feedback = timed("autograde", real_grade, phases), timed("feedback", real_feedback, phases)
    load_before, sampler = load(), LoadSampler()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    print(f"grading {len(students)} students x {names} with {args.workers} workers in {runtime} "
          f"(load average {load_before} on {os.cpu_count()} CPUs)", flush=True)
    sampler.start()
    start = time.perf_counter()
    try:
        rc = cli.main(["grade", "--runtime", str(runtime), "--db-url", db_url, "--workers", str(args.workers),
                       "--no-progress"] + [f"--assignment={a}" for a in names])
    finally:
        wall = time.perf_counter() - start
        sampler.stop.set()
        cli.grade, cli.feedback = real_grade, real_feedback
    load_after = load()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    main_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)

    done = phases.get("autograde", (0, []))[1]
    problems = [f"the grade command exited {rc}"] if rc else []
    if len(done) != len(students) * len(names):
        problems.append(f"graded {len(done)} submissions, expected {len(students) * len(names)}")
    problems += check_full_marks(done, c.exports / "grades.csv") if done else []

    n = len(done) or 1
    per_assignment = {}
    for a in names:
        jobs = [j for j in done if j.assignment == a]
        if jobs:
            per_assignment[a] = {"submissions": len(jobs),
                                 "worker_wall_s_mean": round(statistics.mean(j.seconds for j in jobs), 1),
                                 "worker_cpu_s_mean": round(statistics.mean(j.result.get("cpu_seconds") or 0
                                                                            for j in jobs), 1)}
    row = {"assignments": names, "students": len(students), "submissions": len(done), "workers": args.workers,
           "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
           "wall_s": round(wall, 1), "wall_s_per_submission": round(wall / n, 1),
           "autograde_s": round(phases.get("autograde", (0,))[0], 1),
           "feedback_s": round(phases.get("feedback", (0,))[0], 1),
           "template_gradebook_s": round(setup_s, 1),
           "worker_wall_s_sum": round(sum(j.seconds for j in done), 1),
           "worker_cpu_s_sum": round(sum(j.result.get("cpu_seconds") or 0 for j in done), 1),
           "main_process_cpu_s": round(main_cpu, 1),
           "per_assignment": per_assignment,
           "load_before": load_before, "load_after": load_after,
           "load_max_during": round(max(sampler.samples), 2) if sampler.samples else None,
           "full_marks": not problems, "error": "; ".join(problems)[:2000] or None}
    report = {"date": dt.date.today().isoformat(), "machine": machine_line(), "calibration": calibration(),
              "rows": [row]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))

    print(f"\n{report['date']}, {report['machine']}; calibration {json.dumps(report['calibration'])}")
    print(f"batch: {row['submissions']} submissions of {', '.join(names)}, {args.workers} workers, "
          f"{row['cpus']} CPUs ({row['cpus_usable']} usable)")
    print(f"wall {row['wall_s']} s (autograde {row['autograde_s']} s, feedback {row['feedback_s']} s), "
          f"{row['wall_s_per_submission']} s per submission; template gradebook before it {row['template_gradebook_s']} s")
    print(f"workers: {row['worker_wall_s_sum']} s wall, {row['worker_cpu_s_sum']} CPU s in all; "
          f"main process {row['main_process_cpu_s']} CPU s")
    for a, r in per_assignment.items():
        print(f"  {a}: {r['worker_wall_s_mean']} s wall, {r['worker_cpu_s_mean']} CPU s per submission (worker mean)")
    print(f"load average before {load_before}, after {load_after}, max 1-min during {row['load_max_during']}")
    print(f"wrote {out}")
    if args.keep:
        print(f"kept {runtime}")
    else:
        shutil.rmtree(runtime, ignore_errors=True)
    if problems:
        print(f"\nFAILED: not every submission got full marks ({len(problems)} problems):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"full marks: all {row['submissions']} submissions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
