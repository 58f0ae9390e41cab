"""nbgrader preprocessors that make autograding robust and feedback safe (wired in by ``course.apply``).

- ``GradingExecute``: nbgrader's Execute, plus the kernel's sandbox (``sandbox.enter_kernel``: no processes) and
  guard (``guard.py``) installed before any student code; when no judge serves the kernel (nbgrader's own
  ``autograde``, not ``python -m alignlab.grading grade``) it opens a judge session itself and writes the
  judge's verdict into every test cell, so nbgrader scores the judge's record; and survival of a dying kernel (``os._exit``, a crash, out of memory) or of a cell that ignores the
  timeout's interrupt: that cell and every later graded cell get an error output that says so, so earlier
  exercises keep their points (nbgrader itself would fail the whole submission).
- ``KeepStderrVisible``: stderr left in a graded cell after ``IgnorePattern`` is shown as stdout, so printing to
  stderr does not cost points (a check fails by raising, never by printing).
- ``LimitOutputChars``: caps each text output's characters (a single 5 MB line passes nbgrader's line limit).
- ``RobustOverwriteCells``: nbgrader's OverwriteCells, but a missing test cell is re-added even when the cell
  before it was deleted as well (nbgrader's own version raises KeyError there).
- ``HideHiddenTests``: for feedback: removes the hidden-test region from test cells and every traceback frame
  that quotes a hidden line.
"""
from __future__ import annotations

import re

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode, from_dict
from nbgrader import utils
from nbgrader.preprocessors import Execute, NbGraderPreprocessor, OverwriteCells
from traitlets import Integer, List

from .hidden import HIDDEN_BEGIN, hidden_lines, strip_ansi, strip_hidden_region

# The kernel's first line: its sandbox (sandbox.enter_kernel: no processes), then the guard.
GUARD_LINE = ("import alignlab.grading.sandbox as _alignlab_sandbox; _alignlab_sandbox.enter_kernel(); "
              "import alignlab.grading.guard as _alignlab_guard; _alignlab_guard.install()")
RESTORE_CODE = "__import__('alignlab.grading.guard', fromlist=['restore_before_test']).restore_before_test({source!r})"
KERNEL_DIED = "KernelDied"
NOT_RUN = "NotRun"


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


class GradingExecute(Execute):
    """Execute every cell; install the guard first; if the kernel dies, mark the rest instead of failing."""

    extra_arguments = List([f"--IPKernelApp.exec_lines={GUARD_LINE}"]).tag(config=True)
    _judge = None               # judge.ExecutionJudge: this run's link to the judge

    def preprocess(self, nb, resources=None, km=None):
        # Lazy: course.apply (every nbgrader command, formgrader) imports this module; the judge brings torch and
        # the checks, needed only when a notebook is executed for grading.
        from .judge import ExecutionJudge
        self._stopped = None        # why execution stopped early (the kernel died or cannot be interrupted)
        self._judge = ExecutionJudge(self.config, self.log)
        try:
            return super().preprocess(nb, resources, km)
        finally:
            self._judge.close()

    def preprocess_cell(self, cell, resources, index):
        graded = cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell)
        if graded and self._judge is not None:       # the judge counts only the checks this test cell runs
            self._judge.cell(cell.metadata["nbgrader"].get("grade_id"))
        try:
            cell, resources = self._execute_cell(cell, resources, index)
        finally:
            if graded and self._judge is not None:
                self._judge.cell(None)
        if graded and self._judge is not None:
            self._judge.write_verdict(cell)
        return cell, resources

    def _execute_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        if self._stopped is not None:
            if utils.is_grade(cell):
                cell.outputs = [_error(NOT_RUN, f"not run: {self._stopped}")]
            return cell, resources
        try:
            if utils.is_grade(cell) and not utils.is_solution(cell):
                self._restore_guard(cell.source)
            return super().preprocess_cell(cell, resources, index)
        except (DeadKernelError, CellTimeoutError) as exc:
            if isinstance(exc, CellTimeoutError) and self._responsive():
                cell.outputs.append(_error("CellTimeoutError", f"this cell ran past the time limit ({self.timeout} s) "
                                           "and was interrupted"))
                return cell, resources
            if isinstance(exc, DeadKernelError):
                what = "the kernel died while running this cell (os._exit, a crash, or out of memory)"
                self._stopped = f"the kernel died earlier, in cell {index}"
            else:
                what = f"this cell ran past the time limit ({self.timeout} s) and ignored the interrupt"
                self._stopped = f"cell {index} timed out and could not be interrupted"
            cell.outputs.append(_error(KERNEL_DIED if isinstance(exc, DeadKernelError) else "CellTimeoutError", what))
            self.log.warning("%s; later graded cells score 0", self._stopped)
            return cell, resources

    def _restore_guard(self, source: str) -> None:
        """Undo tampering before a test cell by a request of the grader's own (not an event the cells can remove)."""
        try:
            self.wait_for_reply(self.kc.execute(RESTORE_CODE.format(source=source), silent=True, store_history=False))
        except (DeadKernelError, CellTimeoutError):
            raise
        except Exception as exc:
            self.log.warning("guard restore before a test cell failed: %r", exc)

    def _responsive(self) -> bool:
        """After a timeout: does the kernel answer a kernel_info request within the cell time limit?"""
        try:
            return self.wait_for_reply(self.kc.kernel_info()) is not None
        except Exception:
            return False


class KeepStderrVisible(NbGraderPreprocessor):
    """In graded cells, turn remaining stderr streams into stdout (prefixed), so noise is not a failure."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and utils.is_grade(cell):
            for out in cell.outputs:
                if out.output_type == "stream" and out.name == "stderr":
                    out.name = "stdout"
                    out.text = "".join(f"[stderr] {line}" for line in out.text.splitlines(keepends=True))
        return cell, resources


class LimitOutputChars(NbGraderPreprocessor):
    """Cap every text output at ``max_chars`` (nbgrader's LimitOutput counts lines; one line can be megabytes)."""

    max_chars = Integer(20_000, help="most characters kept per text output").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and len(out.text) > self.max_chars:
                out.text = out.text[: self.max_chars] + f"\n... output truncated at {self.max_chars} characters ...\n"
            data = out.get("data", {})
            if isinstance(data.get("text/plain"), str) and len(data["text/plain"]) > self.max_chars:
                data["text/plain"] = data["text/plain"][: self.max_chars] + "\n... truncated ..."
        return cell, resources


class RobustOverwriteCells(OverwriteCells):
    """OverwriteCells whose re-adding of missing grade cells survives a deleted neighbour."""

    def add_missing_grade_cells(self, nb, resources):
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        source_ids = [c.name for c in source_nb.source_cells]
        solution_ids = {c.name for c in source_nb.solution_cells}
        for grade_cell in sorted(source_nb.grade_cells, key=lambda g: source_ids.index(g.name)):
            present = {c["metadata"]["nbgrader"]["grade_id"]: i for i, c in enumerate(nb.cells)
                       if (utils.is_grade(c) or utils.is_solution(c))
                       and "grade_id" in c.get("metadata", {}).get("nbgrader", {})}
            if grade_cell.name in present:
                continue
            self.log.warning("Missing grade cell %s: adding it back", grade_cell.name)
            source_cell = source_nb.source_cells[source_ids.index(grade_cell.name)]
            new = from_dict(self.missing_cell_transform(source_cell, grade_cell.max_score,
                                                        is_solution=grade_cell.name in solution_ids))
            before = [present[s] for s in source_ids[:source_ids.index(grade_cell.name)] if s in present]
            nb.cells.insert(max(before) + 1 if before else len(nb.cells), new)
        return nb, resources


class HideHiddenTests(NbGraderPreprocessor):
    """Feedback only: drop hidden-test regions from sources and traceback frames that quote hidden lines."""

    def preprocess(self, nb, resources):
        self._hidden = hidden_lines(nb)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if HIDDEN_BEGIN in cell.source:
            cell.source = strip_hidden_region(cell.source, "# (hidden tests ran here)")
        if cell.cell_type == "code":
            for out in cell.outputs:
                if out.output_type == "error":
                    kept = [frame for frame in out.traceback
                            if not any(line in strip_ansi(frame) for line in self._hidden)]
                    if len(kept) < len(out.traceback):
                        kept.insert(0, "(frames from hidden tests are not shown)")
                    if not any(re.search(re.escape(out.ename), strip_ansi(f)) for f in kept):
                        kept.append(f"{out.ename}: {out.evalue}")
                    out.traceback = kept
        return cell, resources
