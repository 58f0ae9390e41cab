"""The judge: the truth of a grading batch, held outside every student's process.

Layout. The ``grade`` process (root when submissions are sandboxed) holds one :class:`Judge` per batch: the
hidden seed (:func:`hidden_seed`, its only home) and the cases built from it, expected outputs and gradients
included. For each submission it opens a :class:`Session`: a Unix socket that only the submission's uid can
reach, served by a thread of the grade process. The submission's kernel (``ALIGNLAB_JUDGE`` names the socket)
asks for a check's cases and receives their inputs and gradient weights only; it runs the learner's function
and sends back outputs, gradients and the fingerprints of the code that ran (``alignlab/checks/_wire.py``).
The session compares (``checks.exercises.judge_replies``), names the mistake and records the verdict. Nothing
the kernel prints counts: a test cell's score is :meth:`Session.cell_verdict`, the judge's record of the last
run of each check the cell's source calls (public and hidden), and :func:`apply_verdicts` writes that verdict
into the graded notebook (for feedback, and for nbgrader's own scoring when nbgrader's ``autograde`` runs
the notebook without the parallel grader: ``GradingExecute`` then opens a session itself).

Protocol (one request per connection, answered once):

    {"op": "cases", "check": NAME, "hidden": bool}       -> {"run": id, "cases": JSON} + inputs (safetensors)
    {"op": "replies", "run": id, "replies": [...], "code": [fingerprints]} + outputs -> {"passed", "message"}
    {"op": "answer", "question": ID, "answer": normalized, "shown": text}          -> {"passed", "message"}
    {"op": "report", "check": NAME, "hidden": bool, "passed": bool, "message": text} -> {"recorded": true}
    {"op": "cell", "cell": GRADE_ID or null}    (from the grader's worker only, by its pid) -> {"cell": ...}

Every run is recorded with the graded cell that was running when it started, as the grader's worker (whose pid
the session knows; the kernel is another process) told the judge: a check that a later cell calls on another
function (notebook 00 shows a failing check on purpose) does not touch the test cell's verdict.

A run whose replies never come (the kernel was interrupted, timed out or died) stays failed. "report" is the
kernel's own verdict of the two checks whose cases are models, not tensors (notebook 05's debugging exercise):
recorded as self-reported.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import struct
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from nbformat.notebooknode import NotebookNode

from ..checks import _wire
from ..checks._core import _code_of, code_fingerprint, encode_cases, hidden_cases, inputs_only, load_cases, reference_function
from ..checks.exercises import EXERCISES, CheckFailed, Reply, decode_replies, judge_replies, passed_line
from ..checks.questions import matching_parts, normalize
from ..checks.questions import verdict as question_verdict

HIDDEN_SEED_ENV = "ALIGNLAB_HIDDEN_SEED"      # the grader's seed, when every grader of a course must share one
HIDDEN_SEED_FILE = "hidden_seed"              # else runtime/hidden_seed, drawn once (mode 0600, git-ignored)
REPORTED = ("make_reference", "dpo_training_step")   # checks that run in the kernel and report their verdict
MAX_RUNS = 2000                               # check runs one submission may start


def hidden_seed(runtime: Path) -> int:
    """The seed the hidden cases are built from: ``$ALIGNLAB_HIDDEN_SEED`` (give every grader of a course the same),
    else ``runtime/hidden_seed``, drawn once at random and kept there (git-ignored, mode 0600), so a re-grade
    meets the same hidden cases. Only the judge reads it: it never enters a student's process (environment,
    files or arguments), and the repository holds no hidden case at all."""
    raw = os.environ.get(HIDDEN_SEED_ENV, "").strip()
    if raw:
        if not raw.isdigit():
            raise SystemExit(f"{HIDDEN_SEED_ENV}={raw!r}: give a non-negative integer (or unset it)")
        return int(raw)
    path = Path(runtime) / HIDDEN_SEED_FILE
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        seed = 1 + secrets.randbelow(2 ** 62)
        Path(runtime).mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{seed}\n")
        return seed


@dataclass
class Record:
    """One check run as the judge saw it."""
    check: str                       # exercise name, or "multiple_choice:<question id>"
    hidden: bool
    passed: bool                     # False until the replies came back and passed
    message: str                     # what the learner reads (first failing case, or the success line)
    mistake: str | None = None       # the known mistake the answer matches
    same_code: str | None = None     # the graded function ran this course function's own code (compiled elsewhere)
    self_reported: bool = False      # the kernel's own verdict (REPORTED checks)
    answered: bool = False           # replies came back
    cell: str | None = None          # the graded cell that was running when the run started (None: another cell)


@dataclass
class Verdict:
    """The judge's verdict on one test cell."""
    passed: bool
    reason: str                      # "" when passed
    records: list[Record]


class Judge:
    """The truth of one batch: the grader's seed and the cases built from it. Safe to share between sessions."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._lock = threading.Lock()          # case building and comparing touch process-wide state (stderr, warnings)
        self._reference_code: dict[str, str] = {}

    def cases(self, name: str, hidden: bool):
        with self._lock:
            exercise = EXERCISES[name]
            return hidden_cases(exercise, self.seed) if hidden else load_cases(exercise)

    def reference_fingerprint(self, name: str) -> str:
        if name not in self._reference_code:
            self._reference_code[name] = code_fingerprint(_code_of(reference_function(name)))
        return self._reference_code[name]

    def judge(self, name: str, hidden: bool, cases, replies, code: list[str]) -> Record:
        exercise = EXERCISES[name]
        same = f"alignlab.reference.{name}" if self.reference_fingerprint(name) in set(code) else None
        with self._lock:
            try:
                judge_replies(exercise, cases, replies)
            except CheckFailed as failure:
                return Record(name, hidden, False, str(failure), failure.mistake, same, answered=True)
            except Exception as error:           # a malformed (forged) reply
                return Record(name, hidden, False, f"{name}: the reply could not be judged "
                              f"({type(error).__name__}: {str(error)[:200]}).", None, same, answered=True)
        return Record(name, hidden, True, passed_line(exercise, hidden, len(cases)), None, same, answered=True)

    def answer(self, question: str, answer: str, shown: str) -> Record:
        try:
            passed, message = question_verdict(question, normalize(answer), shown=shown)
        except LookupError as error:
            passed, message = False, str(error)
        return Record(f"multiple_choice:{question}", False, passed, message, answered=True)


NO_ANSWER = "no answer came back from the kernel (the check was interrupted, timed out, or the kernel died)"


class Session:
    """One submission's connection to the judge: a socket only its uid can reach, and the records of its check runs."""

    def __init__(self, judge: Judge, directory: Path, uid: int | None = None, name: str = "session"):
        self.judge, self.uid = judge, uid
        self.records: list[Record] = []
        self.cell: str | None = None            # the graded cell running now, as the grader (not the kernel) says
        self.worker_pid: int | None = None      # the grader's process that runs the notebook: only it may say so
        self.worker_known = threading.Event()
        self._pending: dict[int, tuple[str, bool, list]] = {}
        self.address = str(Path(directory) / f"{name}.sock")
        if len(self.address.encode()) > 100:
            raise ValueError(f"socket path too long: {self.address}")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.address)
        os.chmod(self.address, 0o600)
        if uid is not None:
            os.chown(self.address, uid, uid)
        self._sock.listen(8)
        self._sock.settimeout(0.5)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"judge-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ serving
    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                try:
                    self._handle(conn)
                except Exception:            # a broken or hostile client only loses its own answer
                    pass

    def set_worker(self, pid: int) -> None:
        """The pid of the grader's worker, which alone may say which cell runs (the kernel is another process)."""
        self.worker_pid = pid
        self.worker_known.set()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if self.uid is not None and uid not in (self.uid, 0):
            return
        header, blob = _wire.receive(conn)
        if header.get("op") == "cell":
            self.worker_known.wait(10)
            if pid != self.worker_pid:
                _wire.send(conn, {"error": "only the grader says which cell runs"})
                return
            self.cell = header.get("cell") if isinstance(header.get("cell"), str) else None
            _wire.send(conn, {"cell": self.cell})
            return
        answer, payload = self.dispatch(header, blob)
        _wire.send(conn, answer, payload)

    def dispatch(self, header: dict, blob: bytes = b"") -> tuple[dict, bytes]:
        """Answer one request (see the module's docstring)."""
        op = header.get("op")
        if len(self.records) >= MAX_RUNS:
            return {"error": "too many check runs"}, b""
        if op == "cases":
            name, hidden = str(header.get("check")), bool(header.get("hidden"))
            if name not in EXERCISES:
                return {"error": f"no exercise named {name!r}"}, b""
            cases = self.judge.cases(name, hidden)
            run = len(self.records)
            self.records.append(Record(name, hidden, False, f"{name}: {NO_ANSWER}.", cell=self.cell))
            self._pending[run] = (name, hidden, cases)
            meta, tensors = encode_cases(EXERCISES[name], inputs_only(cases))
            return {"run": run, "cases": meta.decode()}, tensors
        if op == "replies":
            run = header.get("run")
            if not isinstance(run, int) or run not in self._pending:
                return {"passed": False, "message": "the judge has no such run"}, b""
            name, hidden, cases = self._pending.pop(run)
            code = [str(c) for c in header.get("code", [])][:5000] if isinstance(header.get("code"), list) else []
            try:
                replies = decode_replies(header, blob)
            except Exception as error:           # a malformed (forged) message
                replies = [Reply("failed", message=f"{name}: the kernel's reply could not be read ({type(error).__name__}).")]
            record = self.judge.judge(name, hidden, cases, replies, code)
            record.cell = self.records[run].cell
            self.records[run] = record
            return {"passed": record.passed, "message": record.message}, b""
        if op == "answer":
            record = self.judge.answer(str(header.get("question")), str(header.get("answer", "")),
                                       str(header.get("shown", header.get("answer", "")))[:200])
            record.cell = self.cell
            self.records.append(record)
            return {"passed": record.passed, "message": record.message}, b""
        if op == "report" and header.get("check") in REPORTED:
            self.records.append(Record(str(header["check"]), bool(header.get("hidden")), bool(header.get("passed")),
                                       str(header.get("message", ""))[:20_000], self_reported=True, answered=True,
                                       cell=self.cell))
            return {"recorded": True}, b""
        return {"error": f"unknown request {op!r}"}, b""

    def close(self) -> None:
        self._closed.set()
        try:
            self._sock.close()
        finally:
            self._thread.join(5)
            try:
                os.unlink(self.address)
            except OSError:
                pass

    # ------------------------------------------------------------ verdicts
    def last(self, check: str, hidden: bool, cell: str | None = None) -> Record | None:
        """The last run of ``check`` (public or hidden) that started while ``cell`` ran (any cell: None)."""
        for record in reversed(self.records):
            if record.check == check and record.hidden == hidden and (cell is None or record.cell == cell):
                return record
        return None

    def cell_verdict(self, source: str, cell: str | None = None) -> Verdict | None:
        """The judge's verdict on test cell ``cell``: every check its source calls passed in its last run during that
        cell (``cell`` None: during any cell). None when the cell calls no check, so the judge has no say."""
        needed = requirements(source)
        if not needed:
            return None
        records, reasons = [], []
        for check, hidden in needed:
            record = self.last(check, hidden, cell)
            if record is None:
                what = f"question {check.split(':', 1)[1]}" if ":" in check else \
                    f"the {'hidden' if hidden else 'public'} check of {check}"
                reasons.append(f"{what} never reached the judge")
                continue
            records.append(record)
            if not record.passed:
                reasons.append(record.message.strip().splitlines()[0] if record.message.strip() else "failed")
        return Verdict(not reasons, "; ".join(dict.fromkeys(reasons)), records)

    def to_json(self) -> dict:
        return {"records": [asdict(r) for r in self.records]}


_CALL = re.compile(r"checks\.(\w+)\(([^\n]*)")
_QUESTION = re.compile(r"\s*[\"']([^\"']+)[\"']")


def requirements(source: str) -> list[tuple[str, bool]]:
    """The checks a test cell's source calls: (check, hidden) pairs, in order ("multiple_choice:<id>" for questions,
    one "multiple_choice:<id>/<letter>" per statement of a matching question)."""
    out = []
    for line in source.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for m in _CALL.finditer(line):
            name, rest = m.groups()
            if name == "multiple_choice":
                q = _QUESTION.match(rest)
                if q:
                    out.append((f"multiple_choice:{q.group(1)}", False))
            elif name == "matching":                           # one recorded answer per statement
                q = _QUESTION.match(rest)
                if q:
                    out.extend((f"multiple_choice:{part}", False) for part in matching_parts(q.group(1)))
            elif name in EXERCISES or name in REPORTED:
                out.append((name, bool(re.search(r"hidden\s*=\s*True", rest))))
    return list(dict.fromkeys(out))


JUDGE_NOTE = "Grader's verdict"


def apply_verdict(cell, verdict: Verdict, points: float | None = None) -> None:
    """Write the judge's verdict into a test cell: a last output line that states it, and error outputs that agree
    with it (an error when it failed, none when it passed), so that nbgrader's own scoring of the cell and the
    feedback the student reads are the judge's."""
    score = "" if points is None else f" {points if verdict.passed else 0:g}/{points:g}"
    outputs = [o for o in cell.get("outputs", [])
               if not (o.get("output_type") == "stream" and JUDGE_NOTE in o.get("text", ""))]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    if verdict.passed and errors:
        outputs = [o for o in outputs if o.get("output_type") != "error"]
        raised = "; ".join(f"{o.get('ename')}: {(str(o.get('evalue') or '').splitlines() or [''])[0][:200]}" for o in errors)
        outputs.append(NotebookNode(output_type="stream", name="stdout",
                                    text=f"The kernel also raised {raised} (the checks had passed).\n"))
    text = f"{JUDGE_NOTE}{score}: " + ("passed (every check of this cell, as the judge recorded it)." if verdict.passed
                                       else f"failed: {verdict.reason}")
    outputs.append(NotebookNode(output_type="stream", name="stdout", text=text + "\n"))
    if not verdict.passed and not errors:
        outputs.append(NotebookNode(output_type="error", ename="JudgeVerdict", evalue=verdict.reason,
                                    traceback=[f"JudgeVerdict: {verdict.reason}"]))
    cell.outputs = outputs


def apply_verdicts(nb, verdicts: dict[str, Verdict], max_scores: dict[str, float] | None = None) -> None:
    """:func:`apply_verdict` on every test cell of ``nb`` that has a verdict (grade_id -> Verdict)."""
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in verdicts and cell.cell_type == "code":
            apply_verdict(cell, verdicts[grade_id], (max_scores or {}).get(grade_id))


class ExecutionJudge:
    """GradingExecute's link to the judge for one notebook run. Under the parallel grader (``ALIGNLAB_JUDGE`` set by
    the worker) it only tells the grade process's judge which test cell runs. Under nbgrader's own autograde it opens
    a session here, in nbgrader's (the instructor's) process, with the course's seed, keeps the seed out of the
    kernel's environment, and writes the judge's verdict into each test cell, so that nbgrader scores the judge's
    record."""

    def __init__(self, config, log=None):
        self.log, self.session, self._folder, self._saved = log, None, None, {}
        if _wire.judge_address():
            return
        submitted = config.get("CourseDirectory", {}).get("submitted_directory") if config is not None else None
        runtime = Path(submitted).parent if submitted else Path("autograder") / "runtime"
        self._folder = Path(tempfile.mkdtemp(prefix="alignlab-judge-"))
        self.session = Session(Judge(hidden_seed(runtime)), self._folder)
        self._saved = {k: os.environ.pop(k, None) for k in (HIDDEN_SEED_ENV, _wire.JUDGE_ENV)}
        os.environ[_wire.JUDGE_ENV] = self.session.address

    def cell(self, grade_id: str | None) -> None:
        """The test cell that runs now (None: it ended)."""
        if self.session is not None:
            self.session.cell = grade_id
            return
        try:
            _wire.request({"op": "cell", "cell": grade_id})
        except (OSError, ValueError) as exc:
            if self.log is not None:
                self.log.warning("could not tell the judge which cell runs: %r", exc)

    def write_verdict(self, cell) -> None:
        """With a session of our own: the judge's verdict replaces whatever the kernel showed."""
        if self.session is None:
            return
        meta = cell.metadata.get("nbgrader", {})
        verdict = self.session.cell_verdict(cell.source, meta.get("grade_id"))
        if verdict is not None:
            apply_verdict(cell, verdict, meta.get("points"))

    def close(self) -> None:
        if self.session is None:
            return
        self.session.close()
        shutil.rmtree(self._folder, ignore_errors=True)
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def save_records(path: Path, session: Session, verdicts: dict[str, Verdict], extra: dict | None = None) -> None:
    """The judge's record of one submission, for the class report (root-only file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**(extra or {}), **session.to_json(),
            "cells": {k: {"passed": v.passed, "reason": v.reason,
                          "records": [asdict(r) for r in v.records]} for k, v in verdicts.items()}}
    path.write_text(json.dumps(data, indent=1))
