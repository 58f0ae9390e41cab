"""Adversarial submissions are graded as they deserve, with a readable reason, and never hurt the others.

They are graded in the same parallel batch as the solutions and the untouched notebooks
(tests/adversarial/grading_batch.py), so "the others are graded correctly" is checked on that very batch.
"""
from __future__ import annotations

import re
import time

import nbformat
import pytest

from adversarial import ASSIGNMENT, CASES, DAEMON_MARK, reason_matches
from adversarial.grading_batch import grades, graded_batch, reason_of
from alignlab.grading import batch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def graded():
    return graded_batch()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_adversarial_submission_is_graded_as_it_deserves(graded, case):
    job = graded.jobs[(case.name, ASSIGNMENT)]
    status = job.result["status"]
    if case.status != "any":
        assert status == case.status, f"{case.name}: {status} ({job.result.get('reason')})"
    score = grades(job).get("test_log_softmax", (0.0, 1.0, ""))[0] if status == "graded" else 0.0
    assert score == case.score, f"{case.name}: scored {score}, deserves {case.score}; reason: {reason_of(job)}"
    reason = reason_of(job)
    assert reason_matches(case, reason), f"{case.name}: unhelpful reason {reason!r}"
    if case.score == 0:
        assert len(reason) > 15, f"{case.name}: the reason is too terse: {reason!r}"


def test_the_honest_students_in_the_same_batch_are_graded_correctly(graded):
    sol = grades(graded.jobs[("solutions", ASSIGNMENT)])["test_log_softmax"]
    stub = grades(graded.jobs[("stubs", ASSIGNMENT)])["test_log_softmax"]
    assert sol[0] == sol[1] and stub[0] == 0


def test_the_redefined_check_is_reported_in_the_graded_notebook(graded):
    nb = nbformat.read(graded.course.autograded / "adv_redefined_check" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", 4)
    test_cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_log_softmax")
    text = "".join(o.get("text", "") for o in test_cell.outputs)
    assert "original checks were restored" in text


def _test_cell_text(graded, student, grade_id="test_log_softmax") -> str:
    nb = nbformat.read(graded.course.autograded / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", 4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    return "".join(o.get("text", "") + str(o.get("evalue", "")) for o in cell.outputs)


def test_the_grade_is_the_judge_s_record_not_what_the_kernel_showed(graded):
    """adv_patched_check switched the guard off and replaced the check with one that prints "passed": its test cell
    raised nothing, so nbgrader scored it 1 from the kernel's outputs; the judge never received an answer from it,
    so the gradebook has 0, and the graded notebook says why."""
    job = graded.jobs[("adv_patched_check", ASSIGNMENT)]
    cell = next(g for nb in job.result["notebooks"].values() for g in nb["grades"] if g["id"] == "test_log_softmax")
    assert cell["kernel_score"] == 1.0 and cell["auto_score"] == 0.0, cell
    with graded.course.gradebook() as gb:
        assert gb.find_grade("test_log_softmax", ASSIGNMENT, ASSIGNMENT, "adv_patched_check").auto_score == 0
    text = _test_cell_text(graded, "adv_patched_check")
    assert "public check passed" in text and "Grader's verdict 0/1: failed" in text, text
    assert "never reached the judge" in text


def test_the_test_cell_shows_the_judge_s_verdict_and_the_named_mistake(graded):
    text = _test_cell_text(graded, "adv_redefined_check")            # the real check ran (the guard restored it)
    assert "Grader's verdict 0/1: failed" in text and "known mistake gives: exp overflow" in text, text
    assert "Grader's verdict 1/1: passed" in _test_cell_text(graded, "solutions")


def test_the_judge_records_the_named_mistake_and_the_reexecuted_reference(graded):
    import json
    records = graded.course.runtime / batch.JUDGE_RECORDS / ASSIGNMENT
    wrong = json.loads((records / "wrong.json").read_text())
    assert any(r["mistake"] for r in wrong["records"]), wrong
    copied = json.loads((records / "adv_reexecuted_reference.json").read_text())
    graded_runs = [r for r in copied["records"] if r["cell"] == "test_log_softmax"]
    assert len(graded_runs) == 2 and all(r["same_code"] == "alignlab.reference.log_softmax" for r in graded_runs), copied
    assert copied["cells"]["test_log_softmax"]["passed"]          # a flag for the report, not a zero
    honest = json.loads((records / "honest_original.json").read_text())
    assert not any(r["same_code"] for r in honest["records"]), honest


def test_the_hidden_seed_is_found_nowhere_a_submission_could_reach(graded):
    """The seed stays in the grade process: no workspace file, log, graded notebook, feedback page or export holds
    it, the /proc reader saw no trace of it, and only runtime/hidden_seed (root's, 0600) stores it."""
    from alignlab.grading.judge import HIDDEN_SEED_ENV, HIDDEN_SEED_FILE
    seed_file = graded.course.runtime / HIDDEN_SEED_FILE
    seed = seed_file.read_text().strip()
    assert len(seed) >= 6 and int(seed) != 0
    assert seed_file.stat().st_mode & 0o077 == 0
    found = []
    for path in graded.course.runtime.rglob("*"):
        if path.is_file() and path != seed_file and seed.encode() in path.read_bytes():
            found.append(str(path))
    assert not found, f"the hidden seed is in {found}"
    text = _test_cell_text(graded, "adv_environ_reader", "log_softmax")
    assert "ENVIRON READER" in text and "/proc/self/environ" in text, text[:2000]
    assert HIDDEN_SEED_ENV not in text and seed not in text


def test_huge_output_is_truncated_in_the_graded_notebook(graded):
    path = graded.course.autograded / "adv_huge_output" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert path.stat().st_size < 2_000_000, f"{path} is {path.stat().st_size} bytes"


def test_failed_submission_is_flagged_for_review_in_the_gradebook(graded):
    with graded.course.gradebook() as gb:
        nb = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, "adv_mangled_file")
        assert nb.flagged and all(g.needs_manual_grade for g in nb.grades)


def test_a_submission_over_the_time_limit_is_killed_with_its_kernel(graded, tmp_path):
    """The per-submission timeout kills the worker and its kernel; the result says why."""
    import psutil
    c = batch.Course(runtime=tmp_path / "runtime")
    nb = nbformat.read(batch.course.REPO_ROOT / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", 4)
    loop = next(case for case in CASES if case.name == "adv_unbreakable_loop").build(nb)
    folder = c.submitted / "looper" / ASSIGNMENT
    folder.mkdir(parents=True)
    nbformat.write(loop, folder / f"{ASSIGNMENT}.ipynb")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    template = graded.course.work / "template.db"           # made by the batch
    job = batch.run_one(batch.collect(c)[0], c.work, template, timeout=20, cell_timeout=60)
    assert job.result["status"] == "failed" and "timed out" in job.result["reason"]
    time.sleep(1)
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid not in before and "forkserver" not in " ".join(p.cmdline())]
    assert not left, f"processes left behind: {[p.cmdline() for p in left]}"


def test_a_submission_the_grader_cannot_even_start_is_reported_not_raised(tmp_path):
    """run_one never raises: a broken scratch folder becomes a failed job with a reason, the batch goes on."""
    blocked = tmp_path / "work"
    blocked.write_text("a file where the scratch folder should be")
    job = batch.Job(student="s1", assignment=ASSIGNMENT, submission=tmp_path / "submitted")
    out = batch.run_one(job, blocked, tmp_path / "template.db", timeout=5, cell_timeout=5)
    assert out.result["status"] == "failed" and "could not run this submission" in out.result["reason"]


def test_a_deleted_test_cell_before_other_exercises_is_re_added_and_graded(tmp_path):
    """RobustOverwriteCells re-adds a deleted locked test cell that has later grade cells after it (it used to
    raise AttributeError: 'dict' object has no attribute 'nbgrader' on the re-added cell, failing the notebook)."""
    from alignlab.grading.preprocessors import RobustOverwriteCells
    from alignlab.grading.release import release
    name = "01_preference_data"
    db = f"sqlite:///{tmp_path / 'gb.db'}"
    release([name], release_dir=tmp_path / "release", db_url=db, log=lambda *_: None)
    nb = nbformat.read(batch.course.REPO_ROOT / "notebooks" / name / f"{name}.ipynb", 4)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
    first = ids.index("test_bradley_terry_probability")
    del nb.cells[first]
    del nb.cells[ids.index("test_token_logprobs") - 1]
    pre = RobustOverwriteCells(add_missing_cells=True)
    out, _ = pre.preprocess(nb, {"nbgrader": {"notebook": name, "assignment": name, "db_url": db}})
    got = [c.metadata.get("nbgrader", {}).get("grade_id") for c in out.cells]
    assert got.count("test_bradley_terry_probability") == 1 and got.count("test_token_logprobs") == 1
    assert got.index("bradley_terry_probability") < got.index("test_bradley_terry_probability") \
        < got.index("token_logprobs") < got.index("test_token_logprobs")
    assert all(isinstance(c, nbformat.NotebookNode) for c in out.cells)


@pytest.mark.skipif(not batch.sandboxed(), reason="isolation needs root (see autograder/README.md, Isolation)")
def test_a_kernel_cannot_touch_the_grader_or_other_students(graded):
    """adv_tamper_with_grader tried to open the main gradebook, the template and a reference for writing, to
    create a file in the runtime and to signal the grading processes above its worker: all must have failed,
    and the daemon it left was killed with the rest of its uid."""
    import psutil
    runtime = graded.course.runtime
    assert not (runtime / "pwned.txt").exists(), (runtime / "pwned.txt").read_text()
    assert not (runtime / "created-by-kernel").exists()
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if DAEMON_MARK in " ".join(p.info["cmdline"] or [])]
    assert not left, f"the submission's daemon outlived it: {left}"


def test_a_student_cell_calling_a_hidden_check_gets_feedback(graded):
    """A student cell with checks.x(fn, hidden=True) is that student's own line: feedback is written, not refused."""
    page = graded.course.feedback_dir / "adv_calls_hidden_check" / ASSIGNMENT / f"{ASSIGNMENT}.html"
    assert page in graded.feedback and page.exists()
    assert (graded.course.feedback_dir / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.html").exists()


def test_grades_csv_quotes_a_student_id_with_separators(tmp_path):
    """grades.csv is written with the csv module: an id with , ; and " stays one field (nbgrader's own export
    joined fields by hand and broke the row)."""
    import csv
    from alignlab.grading import results
    from alignlab.grading.release import nbgrader_env
    nbgrader_env()
    c = batch.Course(runtime=tmp_path / "runtime")
    evil = 'a;b,"c'
    with c.gradebook() as gb:
        gb.update_or_create_assignment("00_getting_started")
        gb.update_or_create_student(evil, first_name='Ann, "the" first')
    path = results.export(c)[0]
    rows = list(csv.reader(path.open(newline="")))
    assert rows[0] == results.GRADES_COLUMNS and len(rows) == 2
    assert len(rows[1]) == len(rows[0]) and rows[1][3] == evil and rows[1][5] == 'Ann, "the" first'


def test_zip_entries_nbgrader_would_drop_are_reported(tmp_path):
    """Ids "." and ".." (and names without an id) from an LMS zip are reported, not silently dropped."""
    import zipfile
    archive = tmp_path / "lms.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("alice_00_getting_started.ipynb", ".._00_getting_started.ipynb",
                     "._00_getting_started.ipynb", "notes.ipynb"):
            z.writestr(name, "{}")
    bad = batch.unusable_zip_entries(archive)
    assert len(bad) == 3 and not any(b.startswith("alice") for b in bad)
    assert any("'..'" in b for b in bad) and any("'.'" in b for b in bad)


def test_references_are_compared_with_the_committed_tree(tmp_path, monkeypatch):
    """The grader computes the references' hashes itself (not from the manifest a kernel could rewrite) and
    compares them with git's blobs of HEAD: a rewritten file and its rewritten manifest are both reported."""
    import shutil
    import subprocess
    if subprocess.run(["git", "-C", str(batch.course.REPO_ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    copy = tmp_path / "references"
    shutil.copytree(batch.REFERENCES, copy)
    monkeypatch.setattr(batch, "REFERENCES", copy)
    victim = sorted(p for p in copy.glob("*.json") if p.name != "manifest.json")[0]
    victim.write_text(victim.read_text() + " ")
    (copy / "manifest.json").write_text((copy / "manifest.json").read_text() + " ")
    assert {victim.name, "manifest.json"} <= set(batch.uncommitted_references())
    assert batch.reference_hashes()[victim.name] != batch.hashlib.sha256(
        (batch.course.REPO_ROOT / "autograder" / "references" / victim.name).read_bytes()).hexdigest()


def test_the_class_report_flags_the_two_copies_with_their_pairs_and_no_honest_student(graded):
    """The report of this very batch: the reference re-executed from its source is flagged next to the reference,
    the classmate's renamed and reformatted copy next to the original; the honest students are not flagged."""
    from alignlab.grading import report
    page = report.write_reports(graded.course, [ASSIGNMENT])[0]
    text = page.read_text()
    flags = text.split("id='similarity'", 1)[1].split("id='attention'", 1)[0]
    titles = set(re.findall(r"<h3>log_softmax: (\S+) &harr; ([^<]+)</h3>", flags))
    for case in CASES:
        if case.copy_of == "reference":
            assert (case.name, "course reference") in titles, titles
        elif case.copy_of:
            assert tuple(sorted((case.name, case.copy_of))) in {tuple(sorted(t)) for t in titles}, titles
    flagged = {name for pair in titles for name in pair}
    assert not flagged & {"honest_alt", "stubs"}, titles
    assert {frozenset(t) for t in titles if "honest_original" in t} == {frozenset(("honest_original", "adv_copied_classmate"))}
    assert "exp overflow (maximum not subtracted)" in text.split("id='mistakes'", 1)[1].split("</table>", 1)[0]
