"""The class report: what a class got wrong and who may have copied, one self-contained HTML page per assignment.

``python -m alignlab.grading report`` (``make report``) reads the gradebook (scores, manual grades included, and
flags), the judge's records of the last ``grade`` (runtime/judge/<assignment>/<student>.json: per test cell the
verdict, the named mistake, the status of the submission) and the submitted notebooks (for the similarity report),
and writes ``runtime/reports/<assignment>.html``:

- the score distribution (a histogram, embedded as a PNG);
- per exercise: the pass rate (a bar chart) and, in one table, every named mistake with how many students made it,
  and the other ways answers failed (not implemented, an exception, a check that did not run, ...);
- similarity flags: pairs of answers (or an answer and the course's reference or solution) that look copied, with
  both sources side by side (``similarity.py``): flags to review, never a grade;
- the submissions that failed, timed out, or are flagged for review, with the reason.

The command also writes the grade CSVs, ``exports/canvas_grades.csv`` included (``results.export_canvas_csv``).
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import os
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import MissingEntry

from .batch import JUDGE_RECORDS, REPORTS, Course, graded_cells
from .similarity import Pair, answer_cells, course_answers, same_code_pairs, similar_pairs, stubs


# How a failing answer failed, when it matches no named mistake: (pattern in the judge's message, label)
FAILURES = [
    (r"not implemented yet|not answered yet", "not implemented"),
    (r"calls alignlab\.reference", "calls the course's reference"),
    (r"changes the interpreter's profiler", "switches the profiler off"),
    (r"raised PermissionError", "tried to start a process"),
    (r"your function raised (\w+)", "raised {0}"),
    (r"never reached the judge", "the check did not run"),
    (r"no answer came back", "interrupted, timed out, or the kernel died"),
    (r"wrong shape", "wrong shape"),
    (r"NaN or inf", "NaN or inf"),
    (r"all zeros", "all zeros"),
    (r"low precision|bfloat16|float16", "computed in low precision"),
    (r"gradient", "wrong or missing gradient"),
    (r"is not the answer", "wrong choice"),
    (r"wrong values", "wrong values (no known mistake)"),
]


def failure_label(message: str) -> str:
    for pattern, label in FAILURES:
        m = re.search(pattern, message)
        if m:
            return label.format(*m.groups())
    return "failed"


@dataclass
class Cell:
    """One test cell across the class."""
    grade_id: str
    points: float
    passed: int = 0
    graded: int = 0
    mistakes: Counter = field(default_factory=Counter)      # named mistakes -> students
    failures: Counter = field(default_factory=Counter)      # other ways of failing -> students


@dataclass
class ClassReport:
    assignment: str
    scores: dict[str, float]                 # student -> score (manual grades included, late penalty applied)
    max_score: float
    cells: list[Cell]
    pairs: list[Pair]
    attention: list[tuple[str, str, str]]    # (student, what, why)
    students: int


def _records(c: Course, assignment: str) -> dict[str, dict]:
    folder = c.runtime / JUDGE_RECORDS / assignment
    out = {}
    for path in sorted(folder.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def _answers(c: Course, assignment: str) -> dict[str, dict[str, str]]:
    out = {}
    for folder in sorted(c.submitted.glob(f"*/{assignment}")):
        cells: dict[str, str] = {}
        for path in sorted(folder.glob("*.ipynb")):
            try:
                cells.update(answer_cells(nbformat.read(path, as_version=4)))
            except Exception:        # not a notebook: listed under "failed" instead
                continue
        out[folder.parent.name] = cells
    return out


def build(c: Course, assignment: str) -> ClassReport:
    """Gather everything the report shows for ``assignment``."""
    records = _records(c, assignment)
    tests = {gid: pts for cells in graded_cells(c, assignment).values() for gid, (_, pts, manual) in cells.items()
             if not manual}
    cells = {gid: Cell(gid, pts) for gid, pts in tests.items()}
    scores, attention, max_score = {}, [], 0.0
    with c.gradebook() as gb:
        try:
            max_score = gb.find_assignment(assignment).max_score
        except MissingEntry:
            pass
        for sub in gb.assignment_submissions(assignment):
            student = sub.student.id
            scores[student] = max(0.0, sub.score - (sub.late_submission_penalty or 0.0))
            for nb in sub.notebooks:
                if nb.flagged:
                    attention.append((student, "flagged for review", f"{nb.name}: flagged in the gradebook"))
                for grade in nb.grades:
                    if grade.name in cells and grade.auto_score is not None:
                        cells[grade.name].graded += 1
                        cells[grade.name].passed += grade.auto_score >= grade.max_score
    for student, data in sorted(records.items()):
        if data.get("status") != "graded":
            what = "timed out" if "timed out" in str(data.get("reason", "")) else "failed"
            attention.append((student, what, str(data.get("reason", ""))))
        for gid, verdict in data.get("cells", {}).items():
            if gid not in cells or verdict.get("passed"):
                continue
            failing = [r for r in verdict.get("records", []) if not r.get("passed")]
            named = next((r["mistake"] for r in failing if r.get("mistake")), None)
            if named:
                cells[gid].mistakes[named] += 1
            else:
                label = failure_label(failing[0]["message"] if failing else verdict.get("reason", ""))
                cells[gid].failures[label] += 1
                if label.startswith("interrupted"):
                    attention.append((student, "timed out", f"{gid}: {verdict.get('reason', '')[:200]}"))
    answers = _answers(c, assignment)
    pairs = same_code_pairs(records, answers) + similar_pairs(answers, course_answers(assignment), stubs(assignment))
    seen, unique = set(), []
    for p in pairs:                       # one entry per (exercise, pair of sources)
        key = (p.exercise, p.a, p.b)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    for p in unique:
        attention.append((p.a, "similarity flag", f"{p.exercise}: {p.b} ({p.why})"))
    return ClassReport(assignment, scores, max_score, list(cells.values()), unique,
                       sorted(set(attention)), len(set(scores) | set(records)))


# ------------------------------------------------------------------ plots
def _png(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plot_scores(report: ClassReport):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3))
    values = list(report.scores.values())
    top = max(report.max_score, max(values, default=0.0), 1.0)
    ax.hist(values, bins=min(20, max(5, int(top) + 1)), range=(0, top), color="#4477aa", edgecolor="white")
    ax.set_xlabel(f"score (out of {report.max_score:g})")
    ax.set_ylabel("students")
    ax.set_title(f"{report.assignment}: score distribution ({len(values)} submissions)")
    return fig


def plot_pass_rates(report: ClassReport):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 0.45 * max(2, len(report.cells)) + 0.8))
    names = [c.grade_id for c in report.cells]
    rates = [c.passed / c.graded if c.graded else 0.0 for c in report.cells]
    ax.barh(names[::-1], rates[::-1], color="#228833")
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the class that passed")
    ax.set_title("pass rate per exercise")
    return fig


# ------------------------------------------------------------------ the page
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; } td, th { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } .num { text-align: right; } .pair { display: grid; grid-template-columns: 1fr 1fr; gap: 0.8em; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.6em; overflow-x: auto; font-size: 0.85em; margin: 0; }
h3 { margin-bottom: 0.2em; } .muted { color: #666; }
"""


def render(report: ClassReport) -> str:
    e = html.escape
    values = list(report.scores.values())
    summary = (f"{report.students} submissions; mean {statistics.mean(values):.2f}, median {statistics.median(values):g} "
               f"out of {report.max_score:g}") if values else "no graded submission"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Class report: {e(report.assignment)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Class report: {e(report.assignment)}</h1>",
             f"<p class='muted'>{e(summary)}. Written {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from the gradebook "
             "and the judge's records of the last <code>grade</code>.</p>",
             "<h2>Scores</h2>",
             f"<img id='score-distribution' alt='score distribution' src='data:image/png;base64,{_png(plot_scores(report))}'>",
             "<h2>Exercises</h2>",
             f"<img id='pass-rates' alt='pass rate per exercise' src='data:image/png;base64,{_png(plot_pass_rates(report))}'>",
             "<table id='exercises'><tr><th>test cell</th><th>points</th><th>passed</th><th>pass rate</th>"
             "<th>other failures</th></tr>"]
    for cell in report.cells:
        rate = f"{cell.passed / cell.graded:.0%}" if cell.graded else "-"
        other = ", ".join(f"{e(k)}: {v}" for k, v in cell.failures.most_common()) or "-"
        parts.append(f"<tr><td>{e(cell.grade_id)}</td><td class='num'>{cell.points:g}</td>"
                     f"<td class='num'>{cell.passed}/{cell.graded}</td><td class='num'>{rate}</td><td>{other}</td></tr>")
    parts.append("</table><h2>Named mistakes</h2><p class='muted'>The course's checks name the mistake an answer "
                 "matches; one student counts once per exercise.</p>"
                 "<table id='mistakes'><tr><th>exercise</th><th>mistake</th><th>students</th><th>share of the class</th></tr>")
    rows = [(c, m, n) for c in report.cells for m, n in c.mistakes.most_common()]
    for cell, mistake, n in rows:
        share = f"{n / cell.graded:.0%}" if cell.graded else "-"
        parts.append(f"<tr><td>{e(cell.grade_id)}</td><td>{e(mistake)}</td><td class='num'>{n}</td>"
                     f"<td class='num'>{share}</td></tr>")
    if not rows:
        parts.append("<tr><td colspan='4' class='muted'>no named mistake in this class</td></tr>")
    parts.append("</table><h2>Similarity flags</h2><p class='muted'>Answers compared after normalising names and layout "
                 "(copydetect), with each other and with the course's reference and solution; and answers whose code, "
                 "as the judge saw it run, was the reference's own. A flag is a reason to look, not a grade.</p>"
                 "<div id='similarity'>")
    for p in report.pairs:
        parts.append(f"<div class='flag'><h3>{e(p.exercise)}: {e(p.a)} &harr; {e(p.b)}</h3>"
                     f"<p class='muted'>{e(p.why)}</p><div class='pair'>"
                     f"<div><b>{e(p.a)}</b><pre>{e(p.a_text)}</pre></div>"
                     f"<div><b>{e(p.b)}</b><pre>{e(p.b_text)}</pre></div></div></div>")
    if not report.pairs:
        parts.append("<p class='muted'>no pair above the threshold</p>")
    parts.append("</div><h2>Submissions to look at</h2><table id='attention'><tr><th>student</th><th>what</th>"
                 "<th>why</th></tr>")
    for student, what, why in report.attention:
        parts.append(f"<tr><td>{e(student)}</td><td>{e(what)}</td><td>{e(why[:400])}</td></tr>")
    if not report.attention:
        parts.append("<tr><td colspan='3' class='muted'>none</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_reports(c: Course, assignments: list[str] | None = None) -> list[Path]:
    """One HTML page per assignment with graded submissions (or the given ones), under runtime/reports/."""
    names = assignments or sorted(p.name for p in (c.runtime / JUDGE_RECORDS).glob("*") if p.is_dir())
    out = []
    folder = c.runtime / REPORTS
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)                  # every student's code is in it: the instructor's only
    for assignment in names:
        page = folder / f"{assignment}.html"
        page.write_text(render(build(c, assignment)), encoding="utf-8")
        out.append(page)
    return out
