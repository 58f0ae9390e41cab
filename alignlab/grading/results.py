"""After grading: feedback HTML without hidden tests (verified), and the grade CSVs."""
from __future__ import annotations

import csv
from pathlib import Path

import nbformat
from nbgrader.api import MissingEntry
from nbgrader.apps import NbGraderAPI

from .hidden import HIDDEN_BEGIN, HIDDEN_END, _public_lines, hidden_lines, html_text, leaks
from .release import nbgrader_env


def summary_row(job) -> dict:
    """One line of grades_detail.csv: totals, each graded cell's score, and the reasons for lost points."""
    row = {"student_id": job.student, "assignment": job.assignment, "status": job.result.get("status"),
           "score": 0.0, "max_score": 0.0,
           "seconds": round(job.seconds, 1), "cpu_seconds": job.result.get("cpu_seconds")}
    reasons = [job.result["reason"]] if job.result.get("reason") else []
    for nb in job.result.get("notebooks", {}).values():
        for g in nb["grades"]:
            row[g["id"]] = g["auto_score"]
            row["score"] += g["auto_score"] or 0.0
            row["max_score"] += g["max_score"]
            if g.get("reason"):
                reasons.append(f"{g['id']}: {g['reason']}")
            elif g["auto_score"] is None:
                reasons.append(f"{g['id']}: written answer awaiting manual grading in formgrader")
    row["reasons"] = " | ".join(reasons)
    return row


def feedback(c, pairs: list[tuple[str, str]], log=print) -> list[Path]:
    """Feedback HTML for each (student, assignment) from the main gradebook; verified free of hidden tests."""
    nbgrader_env()
    api = NbGraderAPI(config=c.config)
    secrets = {}
    written = []
    for student, assignment in pairs:
        if not (c.autograded / student / assignment).exists():
            continue
        out = api.generate_feedback(assignment, student, force=True)
        if not out["success"]:
            log(f"feedback for {student}/{assignment} failed: {out['error'][-300:]}")
            continue
        if assignment not in secrets:
            src = Path(c.config.CourseDirectory.source_directory) / assignment
            secrets[assignment] = set().union(*[hidden_lines(nbformat.read(p, as_version=4))
                                                for p in src.glob("*.ipynb")])
        for page in sorted((c.feedback_dir / student / assignment).glob("*.html")):
            # a line the student wrote themselves outside the hidden regions (e.g. a cell calling a check with
            # hidden=True) is theirs to see: it is not a leak
            graded = c.autograded / student / assignment / (page.stem + ".ipynb")
            own = _public_lines(nbformat.read(graded, as_version=4), HIDDEN_BEGIN, HIDDEN_END) \
                if graded.exists() else set()
            found = leaks(html_text(page.read_text(encoding="utf-8")), secrets[assignment] - own)
            if found:               # this student's feedback only: the batch goes on
                page.unlink()
                log(f"feedback for {student}/{assignment} removed: it would show hidden test code ({found[:2]})")
                continue
            written.append(page)
    return written


GRADES_COLUMNS = ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
                  "raw_score", "late_submission_penalty", "score", "max_score"]


def export_grades_csv(gb, dest: Path) -> None:
    """nbgrader's CsvExportPlugin's grades.csv (same columns and rows), written with the csv module's quoting:
    nbgrader joins fields with "," by hand, so a student id or name holding , ; or " broke the row."""
    with open(dest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(GRADES_COLUMNS)
        for assignment in gb.assignments:
            for student in gb.students:
                row = {"assignment": assignment.name, "duedate": assignment.duedate, "student_id": student.id,
                       "last_name": student.last_name, "first_name": student.first_name, "email": student.email,
                       "max_score": assignment.max_score}
                try:
                    sub = gb.find_submission(assignment.name, student.id)
                except MissingEntry:
                    row.update(timestamp="", raw_score=0.0, late_submission_penalty=0.0, score=0.0)
                else:
                    penalty = sub.late_submission_penalty
                    row.update(timestamp=sub.timestamp, raw_score=sub.score, late_submission_penalty=penalty,
                               score=max(0.0, sub.score - (penalty or 0.0)))
                writer.writerow(["" if row[k] is None else str(row[k]) for k in GRADES_COLUMNS])


CANVAS_CSV = "canvas_grades.csv"
CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def export_canvas_csv(gb, dest: Path) -> None:
    """The gradebook's totals in the layout Canvas's gradebook import reads: Student, ID, SIS User ID, SIS Login ID,
    Section, then one column per assignment (a new column name creates the assignment in Canvas), and a
    "Points Possible" row. The nbgrader student id goes to SIS Login ID, which Canvas matches students on."""
    assignments = sorted(gb.assignments, key=lambda a: a.name)
    with open(dest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CANVAS_COLUMNS + [a.name for a in assignments])
        writer.writerow(["    Points Possible", "", "", "", ""] + [f"{a.max_score:g}" for a in assignments])
        for student in sorted(gb.students, key=lambda s: s.id):
            name = ", ".join(x for x in (student.last_name, student.first_name) if x) or student.id
            row = [name, "", "", student.id, ""]
            for a in assignments:
                try:
                    sub = gb.find_submission(a.name, student.id)
                except MissingEntry:
                    row.append("")
                    continue
                row.append(f"{max(0.0, sub.score - (sub.late_submission_penalty or 0.0)):g}")
            writer.writerow(row)


def export(c, jobs: list | None = None) -> list[Path]:
    """grades.csv (nbgrader's export: totals incl. manual grades), canvas_grades.csv (the same totals for Canvas's
    gradebook import) and, for a batch, grades_detail.csv."""
    c.exports.mkdir(parents=True, exist_ok=True)
    out = [c.exports / "grades.csv", c.exports / CANVAS_CSV]
    with c.gradebook() as gb:
        export_grades_csv(gb, out[0])
        export_canvas_csv(gb, out[1])
    if jobs:
        rows = [summary_row(j) for j in jobs]
        keys = list(dict.fromkeys(k for r in rows for k in r if k != "reasons")) + ["reasons"]
        out.append(c.exports / "grades_detail.csv")
        with open(out[-1], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
    return out
