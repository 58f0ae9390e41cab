"""Adversarial submissions of notebook 00, built from the released student notebook at test time.

Each case is a function ``student notebook -> submission`` (a notebook, or raw bytes for a file that is
not one) and what it deserves: the score of ``test_log_softmax`` and a pattern its reason must match.
Building them from ``notebooks/`` keeps them in step with the notebook; the raw texts below are the
attacks themselves.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Callable

ASSIGNMENT = "00_getting_started"
EXERCISE = "log_softmax"

CORRECT = '''import torch

def log_softmax(logits):
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()
'''
WRONG = '''import torch

def log_softmax(logits):
    return logits - logits.exp().sum(dim=-1, keepdim=True).log()   # no max subtracted: overflows
'''


@dataclass
class Case:
    name: str                                 # the student id in the batch
    build: Callable                           # student notebook -> notebook or bytes
    score: float                              # what test_log_softmax deserves
    reason: str = ""                          # regex the reason must match ("" = no reason when full marks)
    status: str = "graded"                    # "graded", or "failed" when nbgrader cannot grade it at all
    cell_timeout: int | None = None           # a short cell time limit for the looping ones (keeps the test fast)


def _cells(nb, grade_id):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]


def with_solution(source: str):
    """A builder that puts ``source`` in the exercise's solution cell."""
    def build(nb):
        nb = copy.deepcopy(nb)
        _cells(nb, EXERCISE)[0].source = source
        return nb
    return build


def deleted_test_cell(nb):
    nb = with_solution(CORRECT)(nb)
    nb.cells = [c for c in nb.cells if c not in _cells(nb, "test_" + EXERCISE)]
    return nb


def edited_locked_cell(nb):
    nb = with_solution(WRONG)(nb)
    _cells(nb, "test_" + EXERCISE)[0].source = "print('all good, trust me')"
    return nb


# A kernel that attacks the grader and the other students: it finds the main grading runtime above its own
# folder, tries to open for writing (without changing a byte) the main gradebook, the template gradebook and a
# reference file, to create a file in the runtime, to kill the grading parents above its own worker, and it
# leaves a daemon behind. Every success is recorded in <runtime>/pwned.txt; the sandbox must stop them all.
DAEMON_MARK = "alignlab-adversarial-daemon"
TAMPER = CORRECT + '''
import os, signal, subprocess, sys
from pathlib import Path
_main = next((p for p in Path.cwd().parents if (p / "work").is_dir() and (p / "gradebook.db").exists()), None)
_won = []
def _try(what, fn):
    try:
        fn()
        _won.append(what)
    except Exception:
        pass
if _main is not None:
    import alignlab
    _refs = next((Path(alignlab.__file__).parents[1] / "autograder" / "references").glob("*.json"))
    for _t in (_main / "gradebook.db", _main / "work" / "template.db", _refs):
        _try(str(_t), lambda: open(_t, "ab").close())
    _try("create", lambda: (_main / "created-by-kernel").write_text("x"))
    import psutil
    for _p in psutil.Process().parents()[1:]:
        if "pytest" not in " ".join(_p.cmdline()):          # (a real attacker would not spare the grade process)
            _try(f"kill {_p.pid}", lambda: os.kill(_p.pid, 0))
    if _won:
        (_main / "pwned.txt").write_text("\\n".join(_won))
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "%s"], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
''' % DAEMON_MARK


# A lookup instead of an answer: it finds its input among the committed reference files and returns the stored
# output, and it prints the seed its kernel builds the hidden cases from. The public cases are stored, so they
# pass; the hidden ones are not (built from the grader's seed), so the lookup fails them and scores nothing.
LOOKUP = '''import json, torch
from pathlib import Path
from safetensors.torch import load_file
import alignlab
from alignlab.checks._core import hidden_seed
print("HIDDEN SEED", hidden_seed())
_dir = Path(alignlab.__file__).parents[1] / "autograder" / "references"
_table = []
for _meta in _dir.glob("*.json"):
    if _meta.name == "manifest.json":
        continue
    _t = load_file(str(_meta.with_suffix(".safetensors")))
    for _c in json.loads(_meta.read_text())["cases"]:
        _args = [_t[v["tensor"]] for _, v in _c["args"] if "tensor" in v]
        _outs = [_t[o["tensor"]] for o in _c["outputs"] if "tensor" in o]
        if len(_args) == 1 and _outs:
            _table.append((_args[0], _outs[0]))

def log_softmax(logits):
    for x, y in _table:
        if x.shape == logits.shape and x.dtype == logits.dtype and torch.equal(x, logits):
            return y.float()
    return torch.zeros_like(logits.float())
'''


def mangled(nb):
    return b'{"cells": [{"cell_type": "code", "source": "def log_softmax(x'   # a truncated upload


CASES = [
    Case("adv_syntax_error", with_solution("def log_softmax(logits)\n    return logits\n"), 0.0, r"SyntaxError"),
    Case("adv_infinite_loop", with_solution("def log_softmax(logits):\n    while True:\n        pass\n"), 0.0,
         r"Timeout|timed out|KeyboardInterrupt", cell_timeout=20),
    Case("adv_unbreakable_loop", with_solution(
        CORRECT + "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.2)\n"),
        0.0, r"Timeout|timed out", status="any", cell_timeout=20),
    Case("adv_os_exit", with_solution(CORRECT + "import os\nos._exit(0)\n"), 0.0, r"kernel died"),
    Case("adv_deleted_test_cell", deleted_test_cell, 1.0),
    Case("adv_edited_locked_cell", edited_locked_cell, 0.0, r"AssertionError"),
    Case("adv_redefined_check", with_solution(
        WRONG + "from alignlab import checks as _c\n_c.log_softmax = lambda fn, hidden=False: None\n"
        "class checks:\n    @staticmethod\n    def log_softmax(fn, hidden=False):\n        print('passed!')\n"),
        0.0, r"AssertionError"),
    Case("adv_stderr_noise", with_solution(CORRECT.replace(
        "    shifted =", "    import sys, warnings\n    print('debug: called', file=sys.stderr)\n"
        "    warnings.warn('just noise')\n    shifted =")), 1.0),
    Case("adv_huge_output", with_solution(CORRECT + "for i in range(200_000):\n    print('x' * 60, i)\n"
                                          "print('y' * 5_000_000)\n"), 1.0),
    Case("adv_nan_results", with_solution("import torch\n\ndef log_softmax(logits):\n"
                                          "    return torch.full_like(logits.float(), float('nan'))\n"),
         0.0, r"(?i)nan"),
    Case("adv_tamper_with_grader", with_solution(TAMPER), 1.0),
    Case("adv_guard_unregistered", with_solution(
        WRONG + "import alignlab.grading.guard as _g\nget_ipython().events.unregister('pre_run_cell', _g.restore)\n"
        "from alignlab import checks as _c\n_c.log_softmax = lambda fn, hidden=False: None\n"), 0.0, r"AssertionError"),
    Case("adv_torch_patched", with_solution(
        WRONG + "import torch\ntorch.Tensor.all = lambda self, *a, **k: torch.ones((), dtype=torch.bool)\n"
        "torch.equal = lambda *a, **k: True\n"), 0.0, r"AssertionError"),
    Case("adv_calls_hidden_check", with_solution(
        CORRECT + "from alignlab import checks\nchecks.log_softmax(log_softmax, hidden=True)\n"), 1.0),
    Case("adv_looks_up_references", with_solution(LOOKUP), 0.0, r"hidden case"),
    Case("adv_mangled_file", mangled, 0.0, r"not a readable notebook", status="failed"),
]


def reason_matches(case: Case, reason: str) -> bool:
    return bool(re.search(case.reason, reason)) if case.reason else True
