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
    copy_of: str | None = None                # the similarity report must flag it with this pair ("reference" or a student)


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
# output. The public cases are stored, so they pass; the hidden ones are not (the judge builds them from the
# grader's seed), so the lookup fails them and scores nothing.
LOOKUP = '''import json, torch
from pathlib import Path
from safetensors.torch import load_file
import alignlab
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


# ------------------------------------------------------------------ issue 23: cheats that read, patch, delegate or copy
# Each one scored full marks against checks that ran inside the kernel; under the judge the kernel holds no
# expected output, no hidden seed and no verdict, and starts no process.

# Reads the running check's expected outputs from the calling frames, and carries the expected gradient in a
# zero-valued term: passes every public and hidden case of a check that runs in the kernel.
FRAME_READER = """import sys
import torch

def _carry(x, case):
    # a term worth 0 whose gradient is the expected one: d sum(w * out) / dx = expected_grads
    grads = getattr(case, "expected_grads", {}) or {}
    if not grads or not x.requires_grad:
        return 0
    (name, g), = grads.items()
    w = case.grad_weight.double()
    k = torch.where(w != 0, g.double() / w, torch.zeros_like(w))
    return (x.double() * k - (x.double() * k).detach()).float()

def log_softmax(logits):
    for depth in range(1, 10):
        try:
            frame = sys._getframe(depth)
        except ValueError:
            break
        case = frame.f_locals.get("case")
        if case is not None and getattr(case, "expected", None):
            return case.expected[0].float() + _carry(logits, case)
    return torch.zeros_like(logits.float())
"""

# Finds the running check's cases with the garbage collector and answers with their expected outputs.
GC_READER = """import gc
import torch

def log_softmax(logits):
    x = logits.detach()
    for obj in gc.get_objects():
        if type(obj).__name__ == "Case" and getattr(obj, "expected", None):
            given = obj.args.get("logits") if isinstance(getattr(obj, "args", None), dict) else None
            if isinstance(given, torch.Tensor) and given.shape == x.shape and given.dtype == x.dtype \\
                    and torch.equal(given, x):
                out = obj.expected[0].float()
                grads = obj.expected_grads
                if grads and logits.requires_grad:
                    w = obj.grad_weight.double()
                    k = torch.where(w != 0, grads["logits"].double() / w, torch.zeros_like(w))
                    out = out + (logits.double() * k - (logits.double() * k).detach()).float()
                return out
    return torch.zeros_like(logits.float())
"""

# A wrong answer, a check that prints "passed", and the guard switched off first (its hook unregistered and the
# grader's own restore request made a no-op), so the kernel shows a pass and the test cell raises nothing.
PATCHED_CHECK = WRONG + """
import alignlab.grading.guard as _guard
try:
    get_ipython().events.unregister("pre_run_cell", _guard.restore)
except Exception:
    pass
_guard.restore = lambda *a, **k: []
_guard.restore_before_test = lambda *a, **k: None
from alignlab import checks as _checks
_checks.log_softmax = lambda fn, hidden=False: print("log_softmax: public check passed (4 cases).")
"""

# Calls the course's reference in another Python process, out of the profiler's sight, and carries its gradient
# through the Jacobian the other process computes.
SUBPROCESS = '''import os
import subprocess
import sys
import tempfile
import torch

_CODE = """
import sys, torch
from alignlab.reference import log_softmax as ref
x = torch.load(sys.argv[1])
y = ref(x)
J = torch.autograd.functional.jacobian(lambda t: ref(t), x.double())
torch.save((y, J), sys.argv[2])
"""

def log_softmax(logits):
    folder = tempfile.mkdtemp()
    src, dst = os.path.join(folder, "in.pt"), os.path.join(folder, "out.pt")
    torch.save(logits.detach(), src)
    subprocess.run([sys.executable, "-c", _CODE, src, dst], check=True, capture_output=True)
    y, J = torch.load(dst)
    delta = (logits - logits.detach()).double().reshape(-1)
    return y + (J.reshape(y.numel(), -1) @ delta).reshape(y.shape).to(y.dtype)
'''

# The course's reference, compiled again from its source under another file name: the profiler does not know this
# code object, the answer is right. Not a zero: the similarity report flags it next to the reference.
REEXEC_REFERENCE = """import inspect
import alignlab.reference as _course

_namespace = {}
exec(compile(inspect.getsource(_course), "my_helpers.py", "exec"), _namespace)
log_softmax = _namespace["log_softmax"]
"""

# Reads the environment of its own process and of every process it can see, and looks for a seed file: the
# hidden seed must be in none of them. Its answer is right, so it keeps its point.
ENVIRON_READER = CORRECT + """
import glob
import os
from pathlib import Path
_seen = []
for _p in ["/proc/self/environ", f"/proc/{os.getppid()}/environ"] + glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
    try:
        _seen.append(_p + ": " + open(_p, "rb").read().replace(b"\\0", b" ").decode(errors="replace"))
    except Exception:
        pass
for _folder in [Path.cwd(), *Path.cwd().parents]:
    for _name in ("hidden_seed", "job.json", "runtime/hidden_seed"):
        try:
            _seen.append(f"{_folder / _name}: " + (_folder / _name).read_text())
        except Exception:
            pass
print("ENVIRON READER", len(_seen), "sources")
print("\\n".join(_seen))
print(dict(os.environ))
"""

# Two honest answers written independently (neither may be flagged), and a classmate's copy of the first with
# every name changed and the layout redone (it must be flagged, with the first as its pair).
HONEST_ORIGINAL = """import torch

def log_softmax(logits):
    x = logits
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    row_max = x.max(dim=-1, keepdim=True).values
    centred = x - row_max
    log_norm = torch.log(torch.exp(centred).sum(dim=-1, keepdim=True))
    result = centred - log_norm
    return result
"""
COPIED_CLASSMATE = """import torch


def log_softmax(logits):
    # my own version
    z = logits
    if z.dtype in (torch.float16,
                   torch.bfloat16):
        z = z.float()
    m = z.max(dim = -1, keepdim = True).values   # largest logit per row
    d = z - m
    lse = torch.log(torch.exp(d).sum(dim = -1, keepdim = True))
    out = d - lse
    return out
"""
HONEST_ALT = """import torch

def log_softmax(logits):
    values = logits.to(torch.float64) if logits.dtype == torch.float64 else logits.to(torch.float32)
    return values - torch.logsumexp(values, dim=-1, keepdim=True)
"""


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
    # issue 23
    Case("adv_frame_reader", with_solution(FRAME_READER), 0.0, r"case"),
    Case("adv_gc_reader", with_solution(GC_READER), 0.0, r"case"),
    Case("adv_patched_check", with_solution(PATCHED_CHECK), 0.0, r"AssertionError"),
    Case("adv_subprocess_reference", with_solution(SUBPROCESS), 0.0, r"PermissionError|not permitted"),
    Case("adv_reexecuted_reference", with_solution(REEXEC_REFERENCE), 1.0, copy_of="reference"),
    Case("adv_environ_reader", with_solution(ENVIRON_READER), 1.0),
    Case("honest_original", with_solution(HONEST_ORIGINAL), 1.0),
    Case("honest_alt", with_solution(HONEST_ALT), 1.0),
    Case("adv_copied_classmate", with_solution(COPIED_CLASSMATE), 1.0, copy_of="honest_original"),
]
# the cheats of issue 23 that a check running in the kernel let through (they pass it in self-study mode)
KERNEL_CHEATS = {"adv_frame_reader": FRAME_READER, "adv_gc_reader": GC_READER}


def reason_matches(case: Case, reason: str) -> bool:
    return bool(re.search(case.reason, reason)) if case.reason else True
