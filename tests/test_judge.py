"""The judge holds the truth outside the student's process: what crosses the wire, what it records, what it scores.

The end-to-end cheats (graded by ``python -m alignlab.grading grade`` in the shared batch) are in
test_grading_adversarial.py; these are the judge's own parts, without nbgrader.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbformat.notebooknode import NotebookNode

from alignlab.checks._wire import JUDGE_ENV, blob_tensors
from alignlab.checks.exercises import EXERCISES
from alignlab.grading import course, judge, sandbox
from alignlab.grading.judge import HIDDEN_SEED_ENV, Judge, Session, Verdict, apply_verdict, hidden_seed, requirements

REPO = course.REPO_ROOT

# A grading kernel's life in one process: the sandbox entered first, then cells that call the checks.
KERNEL = textwrap.dedent("""
    import _thread, json, os, subprocess, sys, threading, time
    sys.path.insert(0, {tests!r})
    import adversarial as a
    from alignlab import checks, reference
    from alignlab.grading import sandbox
    out = {{"sandbox": sandbox.enter_kernel()}}
    try:
        subprocess.run(["true"])
        out["subprocess"] = "ran"
    except OSError as error:
        out["subprocess"] = str(error)
    t = threading.Thread(target=lambda: None); t.start(); t.join()
    out["thread"] = "ran"

    def raw_thread_delegate(logits):          # the reference, called from a thread _thread starts
        box = []
        _thread.start_new_thread(lambda: box.append(reference.log_softmax(logits)), ())
        while not box:
            time.sleep(0.01)
        return box[0]

    def verdict(fn, hidden, local=False):
        try:
            checks.exercises.run_check(checks.exercises.EXERCISES["log_softmax"], fn, hidden=hidden, quiet=True,
                                       local=local)
            return "passed"
        except AssertionError as error:
            return str(error)

    for name in ("CORRECT", "WRONG", "FRAME_READER", "GC_READER", "SUBPROCESS"):
        ns = {{}}
        exec(getattr(a, name), ns)
        out[name] = {{"self-study": verdict(ns["log_softmax"], True, local=True),
                      "public": verdict(ns["log_softmax"], False), "hidden": verdict(ns["log_softmax"], True)}}
    out["raw_thread"] = verdict(raw_thread_delegate, False)
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def kernel_run():
    """A kernel process that runs the cheats under a judge session of this (the grader's) process."""
    folder = Path(tempfile.mkdtemp(prefix="alignlab-judge-test-"))
    session = Session(Judge(20_261_202), folder)
    env = {**{k: v for k, v in os.environ.items() if k != HIDDEN_SEED_ENV}, JUDGE_ENV: session.address,
           "PYTHONPATH": str(REPO)}
    try:
        out = subprocess.run([sys.executable, "-c", KERNEL.format(tests=str(REPO / "tests"))], env=env, cwd=folder,
                             capture_output=True, text=True, timeout=600)
    finally:
        session.close()
        os.rmdir(folder)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line, out.stdout[-2000:] + out.stderr[-3000:]
    return json.loads(line[len("RESULT"):]), session


def test_the_kernel_starts_no_process_but_threads(kernel_run):
    out, _ = kernel_run
    assert out["sandbox"] == "processes forbidden"
    assert "not permitted" in out["subprocess"] and out["thread"] == "ran"


def test_readers_pass_a_check_in_the_kernel_and_fail_the_judge(kernel_run):
    """The frame and garbage-collector readers find the expected outputs where the check runs in the kernel
    (self-study); under the judge the kernel holds none, so they fail, public and hidden."""
    out, _ = kernel_run
    for cheat in ("FRAME_READER", "GC_READER"):
        assert out[cheat]["self-study"] == "passed", out[cheat]
        assert out[cheat]["public"] != "passed" and out[cheat]["hidden"] != "passed", out[cheat]
    assert out["CORRECT"] == {"self-study": "passed", "public": "passed", "hidden": "passed"}


def test_delegation_through_a_process_or_a_raw_thread_scores_nothing(kernel_run):
    out, _ = kernel_run
    assert out["SUBPROCESS"]["self-study"] != "passed" and "PermissionError" in out["SUBPROCESS"]["public"]
    assert "calls alignlab.reference.log_softmax" in out["raw_thread"], out["raw_thread"]


def test_the_judge_names_the_mistake_and_records_every_run(kernel_run):
    out, session = kernel_run
    assert "exp overflow" in out["WRONG"]["public"], out["WRONG"]
    records = [r for r in session.records if r.check == "log_softmax"]
    assert len(records) == 2 * 5 + 1 and all(r.answered for r in records)
    assert [r.passed for r in records[:2]] == [True, True]
    assert records[2].mistake == "exp overflow (maximum not subtracted)"
    assert session.cell_verdict("checks.log_softmax(log_softmax)\ncheck").passed is False   # the last runs failed


def test_cases_sent_to_a_kernel_hold_inputs_only():
    folder = Path(tempfile.mkdtemp(prefix="alignlab-judge-test-"))
    session = Session(Judge(7), folder)
    try:
        for name in ("log_softmax", "gae_advantages", "dpo_loss"):
            for hidden in (False, True):
                header, blob = session.dispatch({"op": "cases", "check": name, "hidden": hidden})
                meta = json.loads(header["cases"])
                assert all(c["outputs"] == [] and not c.get("expected_grads") and "scale" not in c
                           for c in meta["cases"]), name
                assert all(".arg." in k or k.endswith(".grad_weight") for k in blob_tensors(blob)), name
        assert "error" in session.dispatch({"op": "cases", "check": "no_such_exercise", "hidden": True})[0]
    finally:
        session.close()
        os.rmdir(folder)


def test_a_run_without_replies_or_with_forged_ones_fails():
    folder = Path(tempfile.mkdtemp(prefix="alignlab-judge-test-"))
    session = Session(Judge(7), folder)
    try:
        run = session.dispatch({"op": "cases", "check": "masked_mean", "hidden": True})[0]["run"]
        verdict = session.cell_verdict("checks.masked_mean(masked_mean, hidden=True)")
        assert not verdict.passed and "no answer came back" in verdict.reason
        forged = {"op": "replies", "run": run, "replies": [{"status": "returned", "result": {"tensor": "nope"}}] * 9}
        assert session.dispatch(forged)[0]["passed"] is False
        assert session.dispatch({"op": "replies", "run": run})[0]["passed"] is False      # a run is judged once
        report = {"op": "report", "check": "dpo_training_step", "hidden": True, "passed": True, "message": "ok"}
        session.dispatch(report)
        assert session.last("dpo_training_step", True).self_reported
        assert "error" in session.dispatch({"op": "report", "check": "log_softmax", "passed": True})[0]
    finally:
        session.close()
        os.rmdir(folder)


def test_every_test_cell_of_the_course_names_the_checks_the_judge_must_have_seen():
    for path in sorted((REPO / "solutions").glob("*/*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and not meta.get("solution"):
                needed = requirements(cell.source)
                assert needed, f"{path.name} {meta['grade_id']}: no check the judge could record"
                if "multiple_choice" in cell.source:
                    assert needed[0][0].startswith("multiple_choice:") and len(needed) == 1, needed
                elif "checks.matching(" in cell.source:      # one recorded answer per statement
                    assert len(needed) >= 2 and all(c.startswith("multiple_choice:") and "/" in c and not h
                                                    for c, h in needed), needed
                else:
                    name = meta["grade_id"][len("test_"):]
                    assert needed == [(name, False), (name, True)], needed
    assert requirements("# checks.dpo_loss(f)\nprint('checks.x')") == []


def test_the_judge_builds_hidden_cases_from_the_grader_s_seed():
    from alignlab.checks._core import build_hidden
    exercise = EXERCISES["gae_advantages"]
    cases, expected = Judge(31337).cases("gae_advantages", True), build_hidden(exercise, 31337)
    assert [c.name for c in cases] == [c.name for c in expected]
    assert all(a.args["rewards"].equal(b.args["rewards"]) and a.expected[0].equal(b.expected[0])
               for a, b in zip(cases, expected))


def test_the_hidden_seed_has_one_home(tmp_path, monkeypatch):
    monkeypatch.delenv(HIDDEN_SEED_ENV, raising=False)
    seed = hidden_seed(tmp_path)
    assert seed > 0 and hidden_seed(tmp_path) == seed
    assert (tmp_path / judge.HIDDEN_SEED_FILE).stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv(HIDDEN_SEED_ENV, "4242")
    assert hidden_seed(tmp_path) == 4242
    monkeypatch.setenv(HIDDEN_SEED_ENV, "not a number")
    with pytest.raises(SystemExit):
        hidden_seed(tmp_path)


def test_a_kernel_inherits_no_secret_of_the_grader():
    env = {"PATH": "/bin", "OMP_NUM_THREADS": "1", "ALIGNLAB_DB_URL": "postgresql://grader:secret@db/alignlab",
           "ALIGNLAB_HIDDEN_SEED": "123456789", "AWS_SECRET_ACCESS_KEY": "x", "ALIGNLAB_TRACK": "tiny"}
    assert sandbox.kernel_environment(env) == {"PATH": "/bin", "OMP_NUM_THREADS": "1", "ALIGNLAB_TRACK": "tiny"}


def test_the_verdict_written_into_a_cell_is_what_nbgrader_scores():
    from nbgrader.utils import determine_grade

    def cell(outputs):
        return NotebookNode(cell_type="code", source="checks.x(x)", outputs=outputs,
                            metadata={"nbgrader": {"grade": True, "solution": False, "points": 2, "grade_id": "t"}})

    printed_pass = cell([NotebookNode(output_type="stream", name="stdout", text="x: public check passed\n")])
    apply_verdict(printed_pass, Verdict(False, "the hidden check of x never reached the judge", []), 2)
    assert determine_grade(printed_pass)[0] == 0
    assert "Grader's verdict 0/2: failed" in printed_pass.outputs[-2].text
    raised = cell([NotebookNode(output_type="error", ename="NameError", evalue="later", traceback=[])])
    apply_verdict(raised, Verdict(True, "", []), 2)
    assert determine_grade(raised)[0] == 2 and "The kernel also raised NameError" in raised.outputs[0].text


@pytest.mark.slow
def test_nbgrader_s_own_autograde_scores_the_judge_s_record(tmp_path):
    """Without the parallel grader (nbgrader's autograde, formgrader's button) GradingExecute opens a judge session
    itself: a check patched to print "passed" scores 0 through nbgrader's own scoring, and the cell says why."""
    import shutil

    from adversarial import PATCHED_CHECK, with_solution
    from alignlab.grading import batch
    from alignlab.grading.release import nbgrader_env
    c = batch.Course(runtime=tmp_path / "runtime", db_url=f"sqlite:///{tmp_path / 'runtime' / 'gradebook.db'}")
    nbgrader_env()
    template = batch.template_gradebook(c, ["00_getting_started"], log=lambda *_: None)
    work = tmp_path / "work"
    (work / "submission").mkdir(parents=True)
    student = nbformat.read(REPO / "notebooks" / "00_getting_started" / "00_getting_started.ipynb", as_version=4)
    nbformat.write(with_solution(PATCHED_CHECK)(student), work / "submission" / "00_getting_started.ipynb")
    shutil.copy(template, work / "template.db")
    job = {"student": "patched", "assignment": "00_getting_started", "submission": str(work / "submission"),
           "work_dir": str(work), "template_db": str(work / "template.db"), "cell_timeout": 300, "threads": 1,
           "uid": None}
    (work / "job.json").write_text(json.dumps(job))
    env = {**{k: v for k, v in os.environ.items() if k != JUDGE_ENV}, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "alignlab.grading.worker", str(work / "job.json")], env=env, check=True,
                   timeout=600)
    result = json.loads((work / "result.json").read_text())
    grades = {g["id"]: g for nb in result["notebooks"].values() for g in nb["grades"]}
    assert grades["test_log_softmax"]["auto_score"] == 0.0, result
    graded = nbformat.read(work / "runtime" / "autograded" / "patched" / "00_getting_started" / "00_getting_started.ipynb",
                           as_version=4)
    cell = next(x for x in graded.cells if x.metadata.get("nbgrader", {}).get("grade_id") == "test_log_softmax")
    text = "".join(o.get("text", "") for o in cell.outputs)
    assert "public check passed" in text and "Grader's verdict 0/1: failed" in text, text
