"""Copies: every graded answer of every submission against the course's reference and solutions and against every other
submission of the same assignment, after normalising names and layout.

The comparison is copydetect's (Stanford MOSS's winnowing over pygments tokens, every identifier replaced by one
symbol, whitespace and comments dropped, the released stub's text as boilerplate): for a pair of answers of one
exercise it gives the share of each one's fingerprinted code that the other also holds, and how many normalised
characters they share. A pair is flagged when both shares reach :data:`THRESHOLD` and the shared code is at least
:data:`MIN_SHARED` normalised characters long: a one-line standard formula (``torch.sigmoid(a - b)``) is short of
that by itself, however many learners write it. The judge adds what text cannot show: an answer whose code, when
it ran, was the reference's own (compiled again from its source under another name; ``Record.same_code``).

A flag is for an instructor to review, side by side, never an automatic zero (``python -m alignlab.grading report``).
The false-positive rate on honest answers is measured by tests/test_similarity.py.
"""
from __future__ import annotations

import inspect
import io
import itertools
from dataclasses import dataclass
from pathlib import Path

import nbformat
from copydetect import CodeFingerprint, compare_files

from .. import reference
from .course import REPO_ROOT, RELEASE_DIR, SOURCE_DIR
from .hidden import SOLUTION_BEGIN, SOLUTION_END

K = 25                  # characters of normalised code per fingerprint (copydetect's noise threshold)
WINDOW = 1              # every k-gram kept: answers are short, winnowing would only lose them
THRESHOLD = 0.8         # both answers share at least this much of their fingerprinted code
MIN_SHARED = 75          # ... and at least this many normalised characters (a short standard formula is not a copy)
REFERENCE = "course reference"
SOLUTION = "course solution"


@dataclass
class Pair:
    """Two answers of one exercise that look copied, one from the other."""
    exercise: str
    a: str                       # a student
    b: str                       # another student, or REFERENCE / SOLUTION
    similarity: float            # the smaller of the two shares
    shared: int                  # normalised characters in common
    a_text: str
    b_text: str
    why: str                     # what the flag rests on


def answer_cells(nb) -> dict[str, str]:
    """grade_id -> source of every code answer cell (nbgrader solution cells) of a notebook."""
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")
            and c.metadata["nbgrader"].get("grade_id")}


def _strip_markers(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if SOLUTION_BEGIN.strip("# ") not in line
                     and SOLUTION_END.strip("# ") not in line)


def course_answers(assignment: str, root: Path = REPO_ROOT) -> dict[str, list[tuple[str, str]]]:
    """exercise -> [(REFERENCE, the reference's function source), (SOLUTION, the solution notebook's answer cell)]."""
    out: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((Path(root) / SOURCE_DIR / assignment).glob("*.ipynb")):
        for grade_id, source in answer_cells(nbformat.read(path, as_version=4)).items():
            out.setdefault(grade_id, []).append((SOLUTION, _strip_markers(source)))
            fn = getattr(reference, grade_id, None)
            if callable(fn):
                out[grade_id].insert(0, (REFERENCE, inspect.getsource(fn)))
    return out


def stubs(assignment: str, root: Path = REPO_ROOT) -> dict[str, str]:
    """exercise -> the released stub of its answer cell (signature, docstring): everyone's boilerplate."""
    out: dict[str, str] = {}
    for path in sorted((Path(root) / RELEASE_DIR / assignment).glob("*.ipynb")):
        out.update(answer_cells(nbformat.read(path, as_version=4)))
    return out


def code_only(text: str) -> str:
    """An answer without its top-level import lines (everyone imports torch: that is not copying)."""
    return "\n".join(line for line in text.splitlines()
                     if not (line.startswith("import ") or (line.startswith("from ") and " import " in line)))


def fingerprint(text: str, boilerplate=()) -> CodeFingerprint:
    return CodeFingerprint("answer.py", K, WINDOW, boilerplate=list(boilerplate), fp=io.StringIO(code_only(text)))


def compare(a: CodeFingerprint, b: CodeFingerprint) -> tuple[float, int]:
    """(the smaller share of each answer's fingerprinted code held by the other, normalised characters in common)."""
    overlap, (s1, s2), _ = compare_files(a, b)
    return float(min(s1, s2)), int(overlap)


def flagged(similarity: float, shared: int) -> bool:
    return similarity >= THRESHOLD and shared >= MIN_SHARED


def similar_pairs(answers: dict[str, dict[str, str]], course: dict[str, list[tuple[str, str]]] | None = None,
                  boilerplate: dict[str, str] | None = None) -> list[Pair]:
    """Flagged pairs among ``answers`` (student -> exercise -> source), and between each answer and the course's.

    A student's pair with the course is listed once (the reference if it matches, else the solution)."""
    course, boilerplate = course or {}, boilerplate or {}
    exercises = sorted({e for by in answers.values() for e in by} | set(course))
    pairs = []
    for exercise in exercises:
        stub = boilerplate.get(exercise, "")
        noise = fingerprint(stub, ()).hashes if stub.strip() else ()
        prints = {s: fingerprint(by[exercise], noise) for s, by in sorted(answers.items())
                  if exercise in by and by[exercise].strip() and by[exercise].strip() != stub.strip()}
        theirs = [(label, text, fingerprint(text, noise)) for label, text in course.get(exercise, [])]
        for student, fp in prints.items():
            for label, text, other in theirs:
                similarity, shared = compare(fp, other)
                if flagged(similarity, shared):
                    pairs.append(Pair(exercise, student, label, similarity, shared, answers[student][exercise], text,
                                      f"{similarity:.0%} of the normalised code in common ({shared} characters)"))
                    break
        for (s1, f1), (s2, f2) in itertools.combinations(prints.items(), 2):
            similarity, shared = compare(f1, f2)
            if flagged(similarity, shared):
                pairs.append(Pair(exercise, s1, s2, similarity, shared, answers[s1][exercise], answers[s2][exercise],
                                  f"{similarity:.0%} of the normalised code in common ({shared} characters)"))
    return sorted(pairs, key=lambda p: (-p.similarity, p.exercise, p.a, p.b))


def same_code_pairs(records: dict[str, dict], answers: dict[str, dict[str, str]]) -> list[Pair]:
    """Pairs the judge saw: a student's graded function that ran the course's own code (``Record.same_code``)."""
    pairs = []
    for student, data in sorted(records.items()):
        seen = {r["check"]: r["same_code"] for r in data.get("records", []) if r.get("same_code")}
        for exercise, where in sorted(seen.items()):
            fn = getattr(reference, exercise, None)
            pairs.append(Pair(exercise, student, REFERENCE, 1.0, 0, answers.get(student, {}).get(exercise, ""),
                              inspect.getsource(fn) if callable(fn) else where,
                              f"the judge saw its graded function run {where}'s own code (compiled again from the "
                              "course's source), whatever its cell's text"))
    return pairs
