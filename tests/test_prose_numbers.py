"""The scanner behind the rule that every number in a notebook's prose is printed by the same run
(tests/prose_numbers.py; applied to every executed solution notebook by tests/test_notebooks_execute.py)."""
from __future__ import annotations

import json

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import prose_numbers


def _notebook(markdown: str, printed: str = "", code: str = "x = 1") -> nbformat.NotebookNode:
    cell = new_code_cell(code)
    cell.outputs = [new_output("stream", name="stdout", text=printed)] if printed else []
    return new_notebook(cells=[new_markdown_cell(markdown), cell])


def test_a_number_no_cell_prints_is_reported():
    nb = _notebook("The gold rose to 0.873 at 9.2 nats.", printed="gold 0.861 at KL 9.21")
    assert prose_numbers.unprinted(nb, "nb", {}) == [(0, "0.873")]


def test_printed_numbers_count_at_the_prose_precision_and_as_percentages():
    nb = _notebook("It reached 0.86 (86.1% of pairs), 9.2 nats.", printed="gold 0.8612, accuracy 0.861, KL 9.21")
    assert prose_numbers.unprinted(nb, "nb", {}) == []


def test_code_settings_count_as_stated():
    nb = _notebook("With beta = 0.15 the loss is steeper.", code="config = make(beta=0.15)")
    assert prose_numbers.unprinted(nb, "nb", {}) == []


def test_labels_and_headings_are_not_quantities():
    nb = _notebook("### 7.3 A question\n\nAs section 2.5 and questions 7.1, 7.2 showed (Figure 3.1); torch 2.13.0.")
    assert prose_numbers.markdown_numbers(nb) == []


def test_listed_exceptions_pass_and_only_for_their_notebook():
    nb = _notebook("The DPO paper's beta was 0.1.")
    assert prose_numbers.unprinted(nb, "05_dpo", {"05_dpo": {"0.1": "Rafailov et al. 2023, section 6.1"}}) == []
    assert prose_numbers.unprinted(nb, "06_beyond_dpo", {"05_dpo": {"0.1": "..."}}) == [(0, "0.1")]


def test_every_listed_exception_has_a_reason_and_names_a_notebook():
    exceptions = json.loads(prose_numbers.EXCEPTIONS_FILE.read_text())
    solutions = {p.stem for p in prose_numbers.EXCEPTIONS_FILE.parent.parent.glob("solutions/*/*.ipynb")}
    assert set(exceptions) <= solutions, set(exceptions) - solutions
    for notebook, numbers in exceptions.items():
        for number, reason in numbers.items():
            assert prose_numbers.NUMBER.fullmatch(number), (notebook, number)
            assert len(reason.split()) >= 3, f"{notebook}: give {number} a reason, not {reason!r}"
