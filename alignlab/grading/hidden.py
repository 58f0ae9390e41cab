"""What must never reach a student: lines inside solution and hidden-test regions, and how to look for them.

Used by the feedback preprocessor (to remove hidden tests), by the grading command (to verify every
feedback file before it is kept) and by the tests (to prove the release leaks nothing).
"""
from __future__ import annotations

import html
import re

SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
MIN_SECRET_LEN = 12        # shorter lines ("return x", ")") are too common to count as a leak

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TAG = re.compile(r"<[^>]+>")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def region_lines(source: str, begin: str, end: str) -> list[str]:
    """The lines strictly between ``begin`` and ``end`` markers (all regions of the cell)."""
    inside, out = False, []
    for line in source.splitlines():
        if begin.strip("# ") in line:
            inside = True
        elif end.strip("# ") in line:
            inside = False
        elif inside:
            out.append(line)
    return out


def strip_hidden_region(source: str, replacement: str) -> str:
    """Replace each hidden-test region (markers included) with one ``replacement`` line."""
    out, inside = [], False
    for line in source.splitlines():
        if HIDDEN_BEGIN.strip("# ") in line:
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + replacement)
        elif HIDDEN_END.strip("# ") in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def _secret(lines: list[str], public: set[str]) -> set[str]:
    return {s for s in (line.strip() for line in lines) if len(s) >= MIN_SECRET_LEN and s not in public}


def _public_lines(nb, begin: str, end: str) -> set[str]:
    """Lines of the notebook that lie outside any ``begin``/``end`` region (they are not secret)."""
    public = set()
    for cell in nb.cells:
        secret = set(region_lines(cell.source, begin, end))
        public |= {line.strip() for line in cell.source.splitlines() if line not in secret}
    return public


def hidden_lines(nb) -> set[str]:
    """Stripped, non-trivial lines inside hidden-test regions that appear nowhere else in the notebook."""
    lines = [line for cell in nb.cells for line in region_lines(cell.source, HIDDEN_BEGIN, HIDDEN_END)]
    return _secret(lines, _public_lines(nb, HIDDEN_BEGIN, HIDDEN_END))


def solution_lines(nb) -> set[str]:
    """Stripped, non-trivial lines inside solution regions that appear nowhere else in the notebook."""
    lines = [line for cell in nb.cells for line in region_lines(cell.source, SOLUTION_BEGIN, SOLUTION_END)]
    return _secret(lines, _public_lines(nb, SOLUTION_BEGIN, SOLUTION_END))


def html_text(page: str) -> str:
    """The visible text of an HTML page (tags dropped, entities decoded), for leak searches."""
    return html.unescape(_TAG.sub("", page))


def leaks(text: str, secrets: set[str]) -> list[str]:
    """The secret lines that occur in ``text``."""
    return sorted(s for s in secrets if s in text)
