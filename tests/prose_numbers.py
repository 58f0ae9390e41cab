"""The course's rule for numbers in prose: every number with a decimal point in a notebook's markdown is printed
by a cell of the same run, or is listed, with its reason, in tests/prose_numbers.json.

A markdown number counts as printed when some number in the executed notebook's outputs (streams, text results,
markdown results) or in its code, rounded to the markdown number's decimals, equals it; a percentage in the outputs also counts
as its fraction ("84.8%" prints 0.848) and the other way round. The listed exceptions are the numbers the prose
may state without printing them: a paper's figure (with the paper and section), a worked example's input or
result that the reader computes by hand, a constant of the method (e.g. sigma(-1) = 0.27), each with its reason.

    unprinted(executed_nb, "05_dpo")  -> the markdown numbers of the notebook that are neither printed nor listed
"""
from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

EXCEPTIONS_FILE = Path(__file__).with_name("prose_numbers.json")
# a decimal number, not part of a longer dotted token (a version such as 2.13.0, a file name such as 0.5.json)
NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w.]*\d)(%?)")


HEADING = re.compile(r"^#+\s*$")            # a heading's own number: "### 7.3 ..."


def markdown_numbers(nb) -> list[tuple[int, str]]:
    """(cell index, number as written) for every decimal number in the markdown cells, in order; a heading's
    number ("### 7.3 ...") and a number that labels a section, question, figure or equation are not quantities."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for m in NUMBER.finditer(cell.source):
            before = cell.source[:m.start()].rsplit("\n", 1)[-1]
            if HEADING.match(before) or _labels(before):
                continue
            out.append((i, m.group(1) + m.group(2)))
    return out


def _labels(before: str) -> bool:
    """True when the text before a number ends in a label word, possibly after a list of labelled numbers."""
    stripped = re.sub(r"(?:\d+\.\d+\s*(?:,|and|to|-)?\s*)+$", "", before)
    tail = stripped[-14:]
    return bool(re.search(r"(?:section|sections|question|questions|exercise|exercises|step|steps|figure|fig\.|"
                          r"table|equation|eq\.|appendix|theorem|lemma|§)\s*$", tail, re.IGNORECASE))


def _output_texts(nb) -> list[str]:
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out.get("text", ""))
            for key in ("text/plain", "text/markdown", "text/html"):
                if key in out.get("data", {}):
                    value = out["data"][key]
                    texts.append(value if isinstance(value, str) else "".join(value))
    return texts


def printed_values(nb) -> list[Decimal]:
    """Every decimal number in the outputs and in the code cells (a setting or a worked example's input is stated by
    the code that uses it), with percentages also as fractions and fractions also as percentages."""
    values = []
    for text in _output_texts(nb) + [c.source for c in nb.cells if c.cell_type == "code"]:
        for m in NUMBER.finditer(text):
            value = Decimal(m.group(1))
            values.append(value)
            values.append(value / 100 if m.group(2) else value * 100)
    return values


def _rounds_to(value: Decimal, written: str) -> bool:
    digits = len(written.split(".")[1])
    quantum = Decimal(1).scaleb(-digits)
    target = Decimal(written)
    return any(value.quantize(quantum, rounding=mode) == target for mode in (ROUND_HALF_EVEN, ROUND_HALF_UP))


def load_exceptions() -> dict[str, dict[str, str]]:
    return json.loads(EXCEPTIONS_FILE.read_text()) if EXCEPTIONS_FILE.exists() else {}


def unprinted(nb, notebook: str, exceptions: dict[str, dict[str, str]] | None = None) -> list[tuple[int, str]]:
    """The markdown numbers of ``nb`` (an executed notebook) that no output prints and that are not listed."""
    allowed = (load_exceptions() if exceptions is None else exceptions).get(notebook, {})
    values = printed_values(nb)
    missing = []
    for index, written in markdown_numbers(nb):
        number = written.rstrip("%")
        if written in allowed or number in allowed:
            continue
        if any(_rounds_to(v, number) for v in values):
            continue
        missing.append((index, written))
    return missing
