"""The machinery every check shares: cases, stored references, calling the learner, comparing, diagnosing.

An exercise is described by an :class:`Exercise` (its arguments, its outputs,
how to build its fixed inputs, its known mistakes). ``scripts/make_references.py``
builds each exercise's *public* cases from seeds, runs ``alignlab.reference`` on
them in float64 and stores inputs and expected outputs under
``autograder/references/`` with a manifest of sha256 hashes. :func:`load_cases`
loads them back (refusing a missing or tampered file).

*Hidden* cases are never stored: :func:`hidden_cases` builds them from the same
builders with a seed and solves them with the reference in float64. In a
learner's kernel that is the practice seed 0; the grader's seed never enters a
student's process: under the grader the hidden cases are built by the judge
(``alignlab/grading/judge.py``), outside the kernel, which only receives their
inputs.

:func:`call_learner` calls the learner's function and raises an
``AssertionError`` a learner can act on: which case, which input, expected
against got, and the named mistake when the answer matches a known one.
"""
from __future__ import annotations

import _thread
import contextlib
import hashlib
import inspect
import io
import json
import sys
import threading
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from .. import paths
from .. import reference as course_reference

MANIFEST = "manifest.json"
RTOL = 1e-4   # relative tolerance: float32 arithmetic passes, bfloat16 arithmetic does not
ATOL = 1e-5   # absolute tolerance, multiplied by the case's scale (at least 1)


class ReferenceDataError(RuntimeError):
    """The stored reference outputs are missing or do not match their manifest."""


@dataclass
class Case:
    """One fixed input of an exercise, as built from a seed."""
    name: str                                   # what the case tests; shown to the learner
    args: dict[str, Any]                        # arguments in signature order: tensors, numbers, bools or None
    hidden: bool = False                        # only run by the hidden check
    grad: tuple[str, ...] = ()                  # arguments whose gradient is compared (they get requires_grad)
    grad_weight: Tensor | None = None           # gradient objective: sum(output[grad_output] * grad_weight)
    scale: float | None = None                  # magnitude for the absolute tolerance (default: from the data)
    raises: str | None = None                   # the contract says these inputs raise this exception (e.g. "ValueError")
    expected: list[Any] = field(default_factory=list)       # filled from the reference outputs
    expected_grads: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Mistake:
    """A common wrong answer: what it would give on the same inputs, and advice."""
    name: str                                   # short name, e.g. "sign flipped"
    advice: str                                 # one sentence on what to change
    fn: Callable[..., Any]                      # same arguments as the exercise (float64 tensors), returns the wrong value(s)
    output: int | None = 0                      # which output it predicts (index into Exercise.outputs); None: any (fn returns all)
    loose: bool = False                         # compare with a low-precision tolerance


@dataclass
class Exercise:
    """Everything a check needs to know about one exercise."""
    name: str                                   # the function's name, as in the notebook and alignlab.reference
    outputs: tuple[str, ...] = ("output",)      # names of the returned values (a tuple when more than one)
    kind: str = "float"                         # "float" tensors, "long" tensors, or "number" (a Python float)
    build: Callable[[], list[Case]] | None = None  # the fixed cases, from seeds
    grad_output: int = 0                        # which output the gradient objective reads
    mistakes: list[Mistake] = field(default_factory=list)
    extra: Callable[[Case, tuple], str | None] | None = None  # further contract checks; returns a message or None
    hint: str = ""                              # one line shown with every failure
    only_on_mask: str | None = None             # argument whose 0 entries mark output positions that are not graded
    constants: dict[str, str] = field(default_factory=dict)  # argument -> advice when gradient reaches it (it must not)

    @property
    def single(self) -> bool:
        return len(self.outputs) == 1


# ------------------------------------------------------------------ stored references
def _verified_bytes(directory: Path, filename: str) -> bytes:
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        raise ReferenceDataError(
            f"the checks' reference outputs are missing ({manifest_path} not found). "
            "Run from a checkout of the course, or regenerate them with `make references`.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as error:
        raise ReferenceDataError(f"{manifest_path} is not valid JSON ({error}); restore it or run `make references`.") from None
    path = directory / filename
    if filename not in manifest.get("files", {}):
        raise ReferenceDataError(f"{filename} is not listed in {manifest_path}; regenerate with `make references`.")
    if not path.exists():
        raise ReferenceDataError(f"the reference file {path} is missing; restore it (git checkout) or run `make references`.")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["files"][filename]:
        raise ReferenceDataError(
            f"the reference file {path} has been modified: its sha256 does not match {MANIFEST}. "
            "The checks refuse to grade against it; restore it (git checkout) or run `make references`.")
    return data


def decode_cases(meta_bytes: bytes, tensor_bytes: bytes) -> list[Case]:
    """Cases from their stored form (what :func:`encode_cases` writes)."""
    meta = json.loads(meta_bytes)
    tensors = load_tensors(tensor_bytes)

    def value(entry):
        return tensors[entry["tensor"]] if "tensor" in entry else entry["value"]

    cases = []
    for c in meta["cases"]:
        cases.append(Case(
            name=c["name"], hidden=c["hidden"], grad=tuple(c["grad"]), scale=c.get("scale"), raises=c.get("raises"),
            args={k: value(v) for k, v in c["args"]},
            grad_weight=tensors.get(c["grad_weight"]) if c.get("grad_weight") else None,
            expected=[value(o) for o in c["outputs"]],
            expected_grads={k: tensors[v] for k, v in c.get("expected_grads", {}).items()},
        ))
    return cases


def load_cases(exercise: Exercise, directory: Path | None = None) -> list[Case]:
    """The exercise's public cases with their expected outputs, from verified reference files."""
    directory = Path(directory or paths.REFERENCE_DIR)
    cases = decode_cases(_verified_bytes(directory, f"{exercise.name}.json"),
                         _verified_bytes(directory, f"{exercise.name}.safetensors"))
    if any(c.hidden for c in cases):
        raise ReferenceDataError(f"{directory / exercise.name}.json holds hidden cases, which are never stored; "
                                 "regenerate the references with `make references`.")
    return cases


def _as64(v):
    return v.double() if isinstance(v, Tensor) and v.is_floating_point() else v


def solve(exercise: Exercise, cases: list[Case]) -> list[Case]:
    """Fill every case's expected outputs (and gradients) from ``alignlab.reference``, in float64; return them.

    A case that expects an exception must make the reference raise it. The gradient weight of a case
    without one is drawn from ``generator(10_000 + i)``, ``i`` the case's index in ``cases``.
    """
    reference = reference_function(exercise.name)
    for i, case in enumerate(cases):
        args = {k: _as64(v) for k, v in case.args.items()}
        for name in case.grad:
            args[name] = args[name].clone().requires_grad_(True)
        if case.raises:
            try:
                reference(*args.values())
            except Exception as error:
                if case.raises not in [k.__name__ for k in type(error).__mro__]:
                    raise ReferenceDataError(f"{exercise.name}: the reference raises {error!r} on '{case.name}', "
                                             f"not {case.raises}") from None
            else:
                raise ReferenceDataError(f"{exercise.name}: the reference does not raise {case.raises} on '{case.name}'")
            case.expected, case.grad = [], ()
            continue
        result = reference(*args.values())
        outputs = list(result) if isinstance(result, tuple) else [result]
        case.expected = [_as64(o.detach()) if isinstance(o, Tensor) else float(o) for o in outputs]
        if case.grad:
            out = outputs[exercise.grad_output]
            if case.grad_weight is None:
                case.grad_weight = (randn(generator(10_000 + i), *out.shape, dtype=torch.float64) if out.dim()
                                    else torch.ones((), dtype=torch.float64))
            inputs = [args[n] for n in case.grad]
            grads = torch.autograd.grad((out * case.grad_weight).sum(), inputs, allow_unused=True)
            case.expected_grads = {n: (g if g is not None else torch.zeros_like(x)).double()   # unused: no gradient is due
                                   for n, g, x in zip(case.grad, grads, inputs)}
    return cases


def encode_cases(exercise: Exercise, cases: list[Case]) -> tuple[bytes, bytes]:
    """The stored form of solved cases: (JSON bytes, safetensors bytes). No pickle; deterministic bytes."""
    tensors: dict[str, Tensor] = {}

    def entry(key: str, value) -> dict:
        if isinstance(value, Tensor):
            tensors[key] = value.detach().contiguous()
            return {"tensor": key}
        return {"value": value}

    records = []
    for i, case in enumerate(cases):
        record = {"name": case.name, "hidden": case.hidden, "grad": list(case.grad)}
        if case.raises:
            record["raises"] = case.raises
        record["args"] = [[k, entry(f"{i}.arg.{k}", v)] for k, v in case.args.items()]
        record["outputs"] = [entry(f"{i}.out.{j}", o) for j, o in enumerate(case.expected)]
        if case.scale is not None:
            record["scale"] = case.scale
        if case.grad:
            record["grad_weight"] = entry(f"{i}.grad_weight", case.grad_weight)["tensor"]
            record["expected_grads"] = {n: entry(f"{i}.grad.{n}", g)["tensor"] for n, g in case.expected_grads.items()}
        records.append(record)
    meta = json.dumps({"exercise": exercise.name, "cases": records}, indent=1, sort_keys=False) + "\n"
    return meta.encode(), save_tensors(dict(sorted(tensors.items())))


# ------------------------------------------------------------------ hidden cases: built from a seed
PRACTICE_SEED = 0            # a learner's own hidden=True runs; under the grader the judge holds the grader's seed
_SALT: list[int] = []        # the seed that generator() mixes in while hidden cases are built
_HIDDEN: dict[tuple[str, int], tuple[bytes, bytes]] = {}   # (exercise, seed) -> its encoded hidden cases


@contextlib.contextmanager
def salted(seed: int):
    """While active, ``generator(n)`` draws from a stream that depends on both ``n`` and ``seed`` (0: just ``n``)."""
    _SALT.append(int(seed))
    try:
        yield
    finally:
        _SALT.pop()


def build_hidden(exercise: Exercise, seed: int) -> list[Case]:
    """The exercise's hidden cases built with ``seed`` and solved with the reference in float64."""
    with salted(seed), torch.enable_grad():
        cases = solve(exercise, exercise.build())
    return [c for c in cases if c.hidden]


def hidden_cases(exercise: Exercise, seed: int = PRACTICE_SEED) -> list[Case]:
    """Fresh copies of the exercise's hidden cases for ``seed`` (never read from the repository)."""
    key = (exercise.name, int(seed))
    if key not in _HIDDEN:
        _HIDDEN[key] = encode_cases(exercise, build_hidden(exercise, seed))
    return decode_cases(*_HIDDEN[key])


def inputs_only(cases: list[Case]) -> list[Case]:
    """Copies of ``cases`` without their expected outputs, gradients or scale: what a learner's process may see."""
    return [Case(name=c.name, args=c.args, hidden=c.hidden, grad=c.grad, grad_weight=c.grad_weight, raises=c.raises)
            for c in cases]


# ------------------------------------------------------------------ calling the learner
def _code_of(fn) -> Any:
    fn = inspect.unwrap(fn)
    return getattr(fn, "__code__", None)


def reference_function(name: str):
    return getattr(course_reference, name)


@contextlib.contextmanager
def _quiet():
    """Swallow warnings and stderr from learner code: nbgrader zeroes a test cell that writes to stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()):
            yield


RAISED = object()   # what call_learner returns when the case expects an exception and fn raised it


_PROFILE_SETTERS = (sys.setprofile, sys.settrace, threading.setprofile, threading.settrace)


def _same_code(code, target) -> bool:
    """``code`` is the reference's code object or a copy of it (``code.replace(...)``, ``types.CodeType``)."""
    return code is target or (code.co_code == target.co_code and code.co_consts == target.co_consts
                              and code.co_names == target.co_names and code.co_filename == target.co_filename)


def code_fingerprint(code) -> str:
    """What a code object computes, independent of its file name and line numbers: a digest of its bytecode,
    names, variable names and constants (docstring included; nested code objects by their own fingerprint).
    The reference compiled again from its source under another file name has the reference's fingerprint."""
    digest = hashlib.sha256()

    def feed(c):
        digest.update(c.co_code)
        digest.update(repr((c.co_names, c.co_varnames)).encode())
        for k in c.co_consts:
            if isinstance(k, types.CodeType):
                feed(k)
            else:
                digest.update(repr(sorted(map(repr, k)) if isinstance(k, frozenset) else k).encode())
    feed(code)
    return digest.hexdigest()[:32]


_RAW_THREADS: list = []      # the original _thread.start_new_thread, once profile_raw_threads() wrapped it


def profile_raw_threads() -> None:
    """Make threads started with ``_thread.start_new_thread`` (not only ``threading.Thread``) run under the profiler
    that ``threading.setprofile`` set. The grading kernel calls it before any student code, so a student's cell
    can only ever reach the wrapper."""
    if _RAW_THREADS:
        return
    original = _thread.start_new_thread
    _RAW_THREADS.append(original)

    def start_new_thread(function, args, kwargs=None):
        hook = threading.getprofile()

        def run(*a, **k):
            if hook is not None:
                sys.setprofile(hook)
            return function(*a, **k)
        return original(run, args, kwargs or {})

    _thread.start_new_thread = start_new_thread
    if getattr(threading, "_start_new_thread", None) is original:
        threading._start_new_thread = start_new_thread


def call_learner(exercise: Exercise, fn: Callable, case: Case, args: list[Any], codes: set | None = None) -> Any:
    """Call ``fn(*args)``; turn its exceptions and any delegation into AssertionErrors.

    A profiler watches the call (and any thread it starts) for the reference of this exercise, a copy of
    its code, or an attempt to switch the profiler off; any of them scores nothing. ``codes``, when given,
    collects every code object the call ran (the judge compares their fingerprints with the reference's).
    """
    target = _code_of(reference_function(exercise.name))
    seen, tampered, armed = [], [], [True]
    ran = codes if codes is not None else set()

    def profiler(frame, event, arg):
        if not armed[0]:
            return
        if event == "call":
            ran.add(frame.f_code)
            if _same_code(frame.f_code, target):
                seen.append(True)
        elif event == "c_call" and any(arg is f for f in _PROFILE_SETTERS):
            tampered.append(getattr(arg, "__qualname__", repr(arg)))

    previous, previous_threads = sys.getprofile(), threading.getprofile()
    try:
        with _quiet():
            threading.setprofile(profiler)
            sys.setprofile(profiler)
            try:
                result = fn(*args)
            finally:
                if sys.getprofile() is not profiler:
                    tampered.append("sys.setprofile")
                armed[0] = False
                sys.setprofile(previous)
                threading.setprofile(previous_threads)
    except NotImplementedError:
        raise AssertionError(
            f"{exercise.name}: not implemented yet. Replace `raise NotImplementedError` with your code, "
            "run the cell that defines the function, then this one.") from None
    except Exception as error:  # the learner's bug: say which case and what happened
        if case.raises and case.raises in [k.__name__ for k in type(error).__mro__]:
            result = RAISED   # the contract asks for this exception here
        else:
            raise AssertionError(
                f"{exercise.name}: your function raised {type(error).__name__}: {error}\n"
                f"  case: {case.name}\n  inputs:\n{describe_inputs(case.args)}") from error
    if seen:
        raise AssertionError(
            f"{exercise.name}: your function calls alignlab.reference.{exercise.name}, the course's own answer, "
            "so it scores nothing. Write the computation yourself (calling the reference versions "
            "of earlier exercises is fine).")
    if tampered:
        raise AssertionError(
            f"{exercise.name}: your function changes the interpreter's profiler ({tampered[0]}), which the check uses "
            "to make sure the answer is your own computation, so it scores nothing. Remove that call.")
    return result


def learner_args(case: Case) -> list[Any]:
    """Fresh copies of the case's arguments (the learner may modify them in place)."""
    out = []
    for name, v in case.args.items():
        if isinstance(v, Tensor):
            v = v.clone()
            if name in case.grad:
                v.requires_grad_(True)
        out.append(v)
    return out


def float64_args(case: Case) -> list[Any]:
    """The case's arguments with floating tensors in float64 (for computing mistakes)."""
    return [v.double() if isinstance(v, Tensor) and v.is_floating_point() else
            (v.clone() if isinstance(v, Tensor) else v) for v in case.args.values()]


# ------------------------------------------------------------------ comparing
def case_scale(case: Case) -> float:
    """Magnitude behind the absolute tolerance: the largest finite expected value, at least 1."""
    if case.scale is not None:
        return float(case.scale)
    m = 1.0
    for v in case.expected:
        if isinstance(v, Tensor) and v.is_floating_point() and v.numel():
            finite = v.double()[torch.isfinite(v.double())]
            if finite.numel():
                m = max(m, float(finite.abs().max()))
        elif isinstance(v, (int, float)):
            m = max(m, abs(float(v)))
    return m


def tolerances(case: Case, loose: bool = False) -> tuple[float, float]:
    if loose:
        return 3e-2, 3e-2 * case_scale(case)
    return RTOL, ATOL * case_scale(case)


def close(got: Tensor, expected: Tensor, rtol: float, atol: float) -> bool:
    """Elementwise |got - expected| <= atol + rtol |expected|, with NaN/inf required at the same places."""
    got, expected = got.double(), expected.double()
    if got.shape != expected.shape:
        return False
    fin_e, fin_g = torch.isfinite(expected), torch.isfinite(got)
    if not torch.equal(fin_e, fin_g):
        return False
    if not torch.equal(torch.nan_to_num(expected[~fin_e], nan=0.0), torch.nan_to_num(got[~fin_g], nan=0.0)):
        return False
    diff = (got[fin_g] - expected[fin_e]).abs()
    return bool((diff <= atol + rtol * expected[fin_e].abs()).all())


def as_tensor_output(x) -> Tensor | None:
    return x.detach() if isinstance(x, Tensor) else None


def matching_mistakes(exercise: Exercise, case: Case, index: int, got: Tensor) -> list[Mistake]:
    """The known mistakes whose answer equals ``got`` on this case (and differs from the expected answer)."""
    found = []
    for mistake in exercise.mistakes:
        if mistake.output is not None and mistake.output != index:
            continue
        try:
            with _quiet(), torch.no_grad():
                candidate = mistake.fn(*float64_args(case))
        except Exception:
            continue
        if isinstance(candidate, tuple):
            candidate = candidate[index]
        if isinstance(candidate, (int, float)):
            candidate = torch.tensor(float(candidate), dtype=torch.float64)
        if not isinstance(candidate, Tensor):
            continue
        rtol, atol = tolerances(case, mistake.loose)
        if candidate.shape == got.shape and close(got, candidate, rtol, atol) \
                and not close(candidate, _expected_tensor(case.expected[index]), *tolerances(case)):
            found.append(mistake)
    return found


def explain_mistakes(found: list[Mistake]) -> str:
    """The diagnosis a learner reads: the first matching mistake, its advice, and any other that matches."""
    if not found:
        return ""
    m = found[0]
    also = f" (It also matches: {', '.join(x.name for x in found[1:])}.)" if len(found) > 1 else ""
    return f"\n  This is what a known mistake gives: {m.name}. {m.advice}{also}"


def diagnose(exercise: Exercise, case: Case, index: int, got: Tensor) -> str:
    """The names of known mistakes whose answer equals ``got`` on this case ('' when none matches)."""
    return explain_mistakes(matching_mistakes(exercise, case, index, got))


def _expected_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else torch.tensor(float(x), dtype=torch.float64)


# ------------------------------------------------------------------ formatting
def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _numbers(t: Tensor, k: int = 8) -> str:
    """Small tensors in full, row by row; larger ones as their first k values."""
    t = t.detach()
    t = t.double() if t.is_floating_point() else t
    if t.numel() <= 24 and t.dim() <= 2:
        rows = t.tolist() if t.dim() == 2 else [t.tolist()]
        text = ", ".join("[" + ", ".join(_fmt(v) for v in row) + "]" for row in rows)
        return f"[{text}]" if t.dim() == 2 else text
    flat = t.reshape(-1)
    return "[" + ", ".join(_fmt(v) for v in flat[:k].tolist()) + ", ...]"


def describe(x: Any) -> str:
    """A short, readable description: shape, dtype and a few values."""
    if isinstance(x, Tensor):
        dtype = str(x.dtype).replace("torch.", "")
        if x.dim() == 0:
            return f"tensor of shape () {dtype}: {x.item():.6g}" if x.is_floating_point() else f"tensor of shape () {dtype}: {x.item()}"
        return f"tensor of shape {tuple(x.shape)} {dtype}: {_numbers(x)}"
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, tuple):
        return f"a tuple of {len(x)} values"
    return repr(x) if not hasattr(x, "shape") else f"{type(x).__name__} of shape {getattr(x, 'shape')}"


def describe_inputs(args: dict[str, Any]) -> str:
    return "\n".join(f"    {name} = {describe(v)}" for name, v in args.items())


# ------------------------------------------------------------------ building cases (the ex_*.py builders)
def generator(seed: int) -> torch.Generator:
    """A fresh generator for case ``seed``; inside :func:`salted` (hidden cases), mixed with the grader's seed."""
    if _SALT and _SALT[-1]:
        seed = int.from_bytes(hashlib.sha256(f"{_SALT[-1]}:{seed}".encode()).digest()[:7], "big")
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape: int, scale: float = 1.0, shift: float = 0.0, dtype=torch.float32) -> Tensor:
    """Seeded normal values, drawn in float64 then cast (the same on every machine and thread count)."""
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)


def randint(g: torch.Generator, high: int, *shape: int) -> Tensor:
    return torch.randint(0, high, shape, generator=g, dtype=torch.long)


def spans(T: int, rows: list[tuple[int, int]], dtype=torch.long) -> Tensor:
    """A (B, T) mask with ones on [start, stop) of each row."""
    mask = torch.zeros(len(rows), T, dtype=dtype)
    for b, (start, stop) in enumerate(rows):
        mask[b, start:stop] = 1
    return mask
