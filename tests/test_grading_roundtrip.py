"""The nbgrader round trip: solutions grade to full marks, untouched student notebooks to zero, catalogued
wrong answers lose their points, feedback hides the hidden tests, grades export, manual grades survive.

All of it comes from one parallel batch (tests/adversarial/grading_batch.py), graded once per test run.
"""
from __future__ import annotations

import csv

import pytest

from adversarial.grading_batch import assignments, grades, graded_batch, reason_of
from alignlab.grading import batch, results
from alignlab.grading.hidden import hidden_lines, html_text, leaks

pytestmark = pytest.mark.slow
ASSIGNMENTS = assignments()


@pytest.fixture(scope="module")
def graded():
    return graded_batch()


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_notebook_autogrades_to_full_marks(graded, assignment):
    job = graded.jobs[("solutions", assignment)]
    assert job.result["status"] == "graded", job.result.get("reason")
    got = grades(job)
    assert got, "no graded cells found"
    lost = {k: v for k, v in got.items() if v[0] != v[1] and v[0] is not None}
    assert not lost, f"the solution loses points: {lost}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_unmodified_student_notebook_scores_zero_on_every_graded_cell(graded, assignment):
    job = graded.jobs[("stubs", assignment)]
    assert job.result["status"] == "graded", job.result.get("reason")
    scored = {k: v for k, v in grades(job).items() if v[0] not in (0, None)}
    assert not scored, f"an unanswered notebook earns points: {scored}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_catalogued_wrong_implementations_lose_their_points_through_nbgrader(graded, assignment):
    chosen = graded.wrong[assignment]
    if not chosen:
        pytest.skip(f"{assignment} has no catalogued exercise")
    job = graded.jobs[("wrong", assignment)]
    got = grades(job)
    for exercise, mistake in chosen.items():
        score, top, reason = got[f"test_{exercise}"]
        assert score == 0, f"{exercise} with the mistake {mistake!r} kept {score}/{top}"
        assert reason, f"{exercise}: no reason given for the lost points"


def test_reasons_are_readable(graded):
    job = graded.jobs[("stubs", "00_getting_started")]
    assert "NotImplementedError" in reason_of(job) or "not implemented" in reason_of(job).lower()


def test_grading_ran_in_parallel(graded):
    total = sum(j.seconds for j in graded.jobs.values())
    assert graded.seconds < 0.85 * total, f"batch {graded.seconds:.0f}s vs {total:.0f}s of work: not parallel"


def test_feedback_has_no_hidden_test_code(graded):
    import nbformat
    assert graded.feedback, "no feedback written"
    for page in graded.feedback:
        assignment = page.parent.name
        src = batch.course.REPO_ROOT / "solutions" / assignment / f"{assignment}.ipynb"
        secrets = hidden_lines(nbformat.read(src, as_version=4))
        text = html_text(page.read_text(encoding="utf-8"))
        if page.parent.parent.name == "adv_calls_hidden_check":     # it wrote a hidden=True call itself
            secrets = {s for s in secrets if "hidden=True" not in s}
            text = text.replace("checks.log_softmax(log_softmax, hidden=True)", "")
        assert not leaks(text, secrets), f"{page} shows hidden test code"
        assert "HIDDEN TESTS" not in text and "hidden=True" not in text, page
    shown = html_text((graded.course.feedback_dir / "stubs" / "00_getting_started" /
                       "00_getting_started.html").read_text(encoding="utf-8"))
    assert "not implemented" in shown.lower(), "feedback does not show why the check failed"


def test_grades_csv_lists_every_submission(graded):
    rows = list(csv.DictReader(open(graded.course.exports / "grades.csv")))
    got = {(r["student_id"], r["assignment"]): float(r["score"]) for r in rows}   # every student x assignment
    assert set(graded.jobs) <= set(got)
    for (student, a), job in graded.jobs.items():
        assert got[(student, a)] == sum(g[0] or 0 for g in grades(job).values()), (student, a)
    for a in ASSIGNMENTS:      # written answers stay ungraded until a grader scores them in formgrader
        automatic = sum(top for score, top, _ in grades(graded.jobs[("solutions", a)]).values() if score is not None)
        assert got[("solutions", a)] == automatic, f"grades.csv: {a}'s solution lacks automatic points"
    detail = list(csv.DictReader(open(graded.course.exports / "grades_detail.csv")))
    assert {(r["student_id"], r["assignment"]) for r in detail} == set(graded.jobs)
    for r in detail:
        if float(r["score"]) < float(r["max_score"]):
            assert r["reasons"], f"{r['student_id']}/{r['assignment']} lost points without a reason"


def test_regrading_keeps_manual_grades(graded):
    """A grader's manual score survives re-running the grader on that submission."""
    c, student = graded.course, "adv_mangled_file"      # fails fast: no kernel needed to re-grade it
    with c.gradebook() as gb:
        grade = gb.find_grade("test_log_softmax", "00_getting_started", "00_getting_started", student)
        grade.manual_score = 0.5
        gb.db.commit()
    batch.grade(c, batch.collect(c, ["00_getting_started"], [student]), progress=False, log=lambda *_: None)
    with c.gradebook() as gb:
        grade = gb.find_grade("test_log_softmax", "00_getting_started", "00_getting_started", student)
        assert grade.manual_score == 0.5 and grade.score == 0.5
    results.export(c)
    rows = {(r["student_id"], r["assignment"]): r for r in csv.DictReader(open(c.exports / "grades.csv"))}
    assert float(rows[(student, "00_getting_started")]["score"]) == 0.5


def test_an_lms_zip_is_collected_into_one_folder_per_student(tmp_path):
    import zipfile
    nb = batch.course.REPO_ROOT / "notebooks" / "00_getting_started" / "00_getting_started.ipynb"
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(nb, "alice_12345_678_00_getting_started.ipynb")
        z.write(nb, "bob_late_222_333_00_getting_started.ipynb")
    c = batch.Course(runtime=tmp_path / "runtime")
    batch.zip_collect(c, archive, "00_getting_started", log=lambda *_: None)
    assert [(j.student, j.assignment) for j in batch.collect(c)] == \
        [("alice", "00_getting_started"), ("bob", "00_getting_started")]
    assert (c.submitted / "bob" / "00_getting_started" / "00_getting_started.ipynb").read_bytes() == nb.read_bytes()
