"""One check per exercise: ``checks.NAME(fn, hidden=False)``, and ``own_or_reference`` for demonstrations.

A check runs the learner's function on the exercise's stored public cases (or on
its hidden cases, built from a seed and never stored), compares every output with the float64 reference within a tolerance
that scales with the expected magnitude, checks gradients where a case asks,
and raises an AssertionError that says which case failed, on which inputs,
expected against got, and which known mistake the answer matches. On success
it prints one line to stdout and nothing to stderr.

A check has two halves. :func:`run_cases` is the learner's side: it calls the function on each case's inputs
(under the delegation profiler) and collects what came out, gradients included. :func:`judge_replies` is the
judge's side: it compares that with the expected outputs and names the mistake. In a learner's kernel both run
here, at once. Under the grader (``_wire.judge_address()`` set) the kernel only runs the first half on inputs the
judge sends, and the judge (``alignlab/grading/judge.py``), outside the student's sandbox, runs the second.
"""
from __future__ import annotations

import contextlib
import io
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from . import _wire, ex_basics, ex_dpo, ex_grpo, ex_pg, ex_ppo, ex_reward
from ._core import (RAISED, Case, Exercise, Mistake, _quiet, call_learner, case_scale, close, code_fingerprint,
                    decode_cases, describe, describe_inputs, explain_mistakes, hidden_cases, learner_args, load_cases,
                    matching_mistakes, reference_function, tolerances)
from ._wire import typename

EXERCISES: dict[str, Exercise] = {e.name: e for m in (ex_basics, ex_reward, ex_pg, ex_ppo, ex_dpo, ex_grpo) for e in m.EXERCISES}


class CheckFailed(AssertionError):
    """A check's verdict against the learner: the message, the case, and the first known mistake it matches."""

    def __init__(self, message: str, case: str = "", mistake: str | None = None):
        super().__init__(message)
        self.case, self.mistake = case, mistake


@dataclass
class Reply:
    """What the learner's function did on one case: all the judge needs, besides the case's expected outputs."""
    status: str                     # "returned"; "raised" (the exception the case asks for); "failed" (see message)
    message: str = ""               # "failed": why (an exception, a delegation, not implemented), as the learner reads it
    result: Any = None              # "returned": the value
    grads: dict | None = None       # gradient cases: {"status": "ok", "grads": {arg: tensor | None}}, or "none", "error"


def _fail(exercise: Exercise, case: Case, what: str, detail: str = "", found: list[Mistake] = ()) -> None:
    where = "hidden case" if case.hidden else "case"
    raise CheckFailed(
        f"{exercise.name}: {where} '{case.name}': {what}\n  inputs:\n{describe_inputs(case.args)}"
        f"{detail}{explain_mistakes(list(found))}\n  Hint: {exercise.hint}",
        case=case.name, mistake=found[0].name if found else None)


def _structure(exercise: Exercise, result: Any) -> tuple | None:
    """The outputs as a tuple, or None when ``result`` does not have the exercise's shape of outputs."""
    if exercise.single:
        return None if isinstance(result, tuple) else (result,)
    if not isinstance(result, (tuple, list)) or len(result) != len(exercise.outputs):
        return None
    return tuple(result)


def _unpack(exercise: Exercise, case: Case, result: Any) -> tuple:
    outputs = _structure(exercise, result)
    if outputs is not None:
        return outputs
    if exercise.single:
        _fail(exercise, case, f"expected one value, got a tuple of {len(result)}.")
    _fail(exercise, case, f"expected a tuple ({', '.join(exercise.outputs)}), got {describe(result)}.")


def _masked(exercise: Exercise, case: Case, outputs: tuple) -> tuple:
    """Positions outside ``only_on_mask`` are not graded (values nor gradient): they are set to 0."""
    if not exercise.only_on_mask:
        return outputs
    keep = case.args[exercise.only_on_mask].bool()
    return tuple(torch.where(keep, o, torch.zeros_like(o)) if isinstance(o, Tensor) and o.shape == keep.shape else o
                 for o in outputs)


def _compare(exercise: Exercise, case: Case, index: int, got: Any, expected: Any) -> None:
    label = "" if exercise.single else f"output '{exercise.outputs[index]}': "
    shown = f"\n  expected: {describe(expected)}\n  got:      {describe(got)}"
    if exercise.kind == "number":
        if isinstance(got, bool) or not isinstance(got, numbers.Real):
            _fail(exercise, case, f"{label}expected a Python float, got {typename(got)}.", shown)
        got_t = torch.tensor(float(got), dtype=torch.float64)
        expected_t = torch.tensor(float(expected), dtype=torch.float64)
    else:
        if not isinstance(got, Tensor):
            _fail(exercise, case, f"{label}expected a torch.Tensor, got {typename(got)} "
                                  "(keep it a tensor: no .item(), .tolist() or numpy).", shown)
        if tuple(got.shape) != tuple(expected.shape):
            _fail(exercise, case, f"{label}wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}.", shown,
                  matching_mistakes(exercise, case, index, got.detach()))
        if exercise.kind == "long" and got.is_floating_point():
            _fail(exercise, case, f"{label}expected an integer (long) tensor, got {got.dtype}.", shown)
        if exercise.kind == "float" and not got.is_floating_point():
            _fail(exercise, case, f"{label}expected a floating-point tensor, got {got.dtype}.", shown)
        if got.dtype in (torch.float16, torch.bfloat16):
            _fail(exercise, case, f"{label}your result is {str(got.dtype).replace('torch.', '')}: computed in low precision. "
                                  "Compute in at least float32 (`.float()` first); half precision keeps about 3 digits.", shown)
        got_t, expected_t = got.detach().cpu().double(), expected.double()
    rtol, atol = tolerances(case)
    if close(got_t, expected_t, rtol, atol):
        return
    found = matching_mistakes(exercise, case, index, got_t)
    if not torch.isfinite(got_t).all() and torch.isfinite(expected_t).all():
        _fail(exercise, case, f"{label}your result contains NaN or inf where the expected values are finite.", shown, found)
    if got_t.numel() and (got_t == 0).all():
        _fail(exercise, case, f"{label}your result is all zeros.", shown, found)
    worst = (got_t - expected_t).abs().max().item() if got_t.numel() else math.nan
    _fail(exercise, case, f"{label}wrong values (largest error {worst:.3g}; tolerance {atol:.2g} + {rtol:.0e} x |expected|).",
          shown, found)


def _gradients(exercise: Exercise, case: Case, args: list, result: Any) -> dict:
    """The learner's side of a gradient case: d sum(weight * output) / d input for the case's inputs."""
    outputs = _structure(exercise, result)
    if outputs is None:
        return {"status": "skipped"}           # the judge fails the case on its outputs first
    out = _masked(exercise, case, outputs)[exercise.grad_output]
    if not isinstance(out, Tensor) or not out.requires_grad:
        return {"status": "none"}
    weight = case.grad_weight.double() if case.grad_weight is not None else torch.ones((), dtype=torch.float64)
    inputs = {n: a for n, a in zip(case.args, args) if n in case.grad}
    try:
        with _quiet():
            grads = torch.autograd.grad((out.double() * weight).sum(), list(inputs.values()), allow_unused=True)
    except Exception as error:
        return {"status": "error", "message": f"{type(error).__name__}: {error}"}
    return {"status": "ok", "grads": {n: None if g is None else g.detach() for n, g in zip(inputs, grads)}}


def _check_gradients(exercise: Exercise, case: Case, outputs: tuple, grads: dict | None) -> None:
    out = outputs[exercise.grad_output]
    label = exercise.outputs[exercise.grad_output]
    names = [n for n in case.args if n in case.grad]
    grads = grads or {"status": "none"}
    if not isinstance(out, Tensor) or not out.requires_grad or grads.get("status") != "ok" and grads.get("status") != "error":
        _fail(exercise, case, f"no gradient flows from '{label}' back to {', '.join(names)}. Did you detach, call .item(), "
                              "use numpy, build a new tensor with torch.tensor(...), or work under torch.no_grad()?")
    if grads["status"] == "error":
        _fail(exercise, case, f"backpropagating through your result failed: {grads.get('message', '')}")
    for name in names:
        expected = case.expected_grads[name].double()
        got = grads["grads"].get(name)
        if not isinstance(got, Tensor) and name in exercise.constants:
            continue                        # a constant of the computation: no gradient is the right answer
        if not isinstance(got, Tensor):
            _fail(exercise, case, f"no gradient reaches '{name}': the result does not depend on it through autograd.")
        got = got.detach().cpu().double()
        if name in exercise.constants and (expected == 0).all() and (got != 0).any():
            _fail(exercise, case, f"gradient reaches '{name}', which must be a constant. {exercise.constants[name]}")
        scale = max(case_scale(case), float(expected.abs().max()) if expected.numel() else 1.0)
        if close(got, expected, 1e-4, 1e-5 * scale):
            continue
        shown = f"\n  expected gradient: {describe(expected)}\n  got gradient:      {describe(got)}"
        masked = expected == 0
        if got.shape == expected.shape and masked.any() and (got[masked] != 0).any():
            _fail(exercise, case, f"positions whose gradient should be 0 (masked, padding or clipped) receive gradient in '{name}'.", shown)
        _fail(exercise, case, f"wrong gradient with respect to '{name}' (of sum(weights * {label}) for fixed random weights).", shown)


def run_cases(exercise: Exercise, fn: Callable, cases: list[Case], codes: set | None = None) -> list[Reply]:
    """The learner's side of a check: call ``fn`` on every case (stopping at the first error) and collect the replies.
    Needs only the cases' inputs; ``codes`` collects the code objects the calls ran."""
    replies = []
    for case in cases:
        args = learner_args(case)
        try:
            result = call_learner(exercise, fn, case, args, codes)
        except AssertionError as error:
            replies.append(Reply("failed", message=str(error)))
            break
        if result is RAISED:
            replies.append(Reply("raised"))
            continue
        replies.append(Reply("returned", result=result, grads=_gradients(exercise, case, args, result) if case.grad else None))
    return replies


def judge_replies(exercise: Exercise, cases: list[Case], replies: list[Reply]) -> None:
    """The judge's side of a check: compare the replies with the cases' expected outputs; raise CheckFailed on the first
    failure (the message a learner reads, the case, the known mistake it matches)."""
    for case, reply in zip(cases, replies):
        if reply.status == "failed":
            raise CheckFailed(reply.message, case=case.name)
        if case.raises:
            if reply.status != "raised":
                _fail(exercise, case, f"expected your function to raise {case.raises}, but it returned {describe(reply.result)}.")
            continue
        if reply.status != "returned":
            _fail(exercise, case, "your function raised an exception on these inputs.")
        outputs = _masked(exercise, case, _unpack(exercise, case, reply.result))
        for i, (got, expected) in enumerate(zip(outputs, case.expected)):
            _compare(exercise, case, i, got, expected)
        message = exercise.extra(case, outputs) if exercise.extra else None
        if message:
            _fail(exercise, case, message)
        if case.grad:
            _check_gradients(exercise, case, outputs, reply.grads)
    if len(replies) < len(cases):
        raise CheckFailed(f"{exercise.name}: no answer came back for case '{cases[len(replies)].name}' "
                          "(the check was interrupted).", case=cases[len(replies)].name)


def passed_line(exercise: Exercise, hidden: bool, n: int) -> str:
    return f"{exercise.name}: {'hidden' if hidden else 'public'} check passed ({n} cases)."


def run_check(exercise: Exercise, fn: Callable, hidden: bool = False, quiet: bool = False, local: bool = False) -> None:
    """Run the public (or hidden) cases of one exercise; raise AssertionError on the first failure.

    Under the grader (and unless ``local``) the judge sends the cases and gives the verdict; otherwise both
    halves run here."""
    if not callable(fn):
        raise AssertionError(f"{exercise.name}: pass your function itself, for example checks.{exercise.name}({exercise.name}).")
    if not local and _wire.judge_address():
        return _judged_check(exercise, fn, hidden, quiet)
    cases = hidden_cases(exercise) if hidden else load_cases(exercise)
    judge_replies(exercise, cases, run_cases(exercise, fn, cases))
    if not quiet:
        print(passed_line(exercise, hidden, len(cases)))


def encode_replies(replies: list[Reply], codes: set) -> tuple[dict, bytes]:
    """Replies as a message for the judge (header, blob)."""
    tensors: dict[str, Tensor] = {}
    out = []
    for i, r in enumerate(replies):
        entry: dict[str, Any] = {"status": r.status, "message": r.message[:20_000]}
        if r.status == "returned":
            entry["result"] = _wire.encode_value(r.result, f"{i}.out", tensors)
        if r.grads is not None:
            g = {k: v for k, v in r.grads.items() if k != "grads"}
            if "grads" in r.grads:
                g["grads"] = {n: _wire.encode_value(t, f"{i}.grad.{n}", tensors) for n, t in r.grads["grads"].items()}
            entry["grads"] = g
        out.append(entry)
    fingerprints = sorted({code_fingerprint(c) for c in list(codes)[:5000]})
    return {"replies": out, "code": fingerprints}, _wire.tensors_blob(tensors)


def decode_replies(header: dict, blob: bytes) -> list[Reply]:
    """The replies of a message (what :func:`encode_replies` wrote)."""
    tensors = _wire.blob_tensors(blob)
    replies = []
    for entry in header.get("replies", []):
        grads = entry.get("grads")
        if isinstance(grads, dict) and isinstance(grads.get("grads"), dict):
            grads = {**grads, "grads": {n: _wire.decode_value(e, tensors) for n, e in grads["grads"].items()}}
        replies.append(Reply(status=str(entry.get("status")), message=str(entry.get("message", "")),
                             result=_wire.decode_value(entry["result"], tensors) if "result" in entry else None,
                             grads=grads if isinstance(grads, dict) else None))
    return replies


def _judged_check(exercise: Exercise, fn: Callable, hidden: bool, quiet: bool) -> None:
    """Under the grader: cases from the judge (inputs only), the learner's function run here, the verdict from the judge."""
    try:
        header, blob = _wire.request({"op": "cases", "check": exercise.name, "hidden": bool(hidden)})
    except OSError as error:
        raise AssertionError(f"{exercise.name}: the grader's judge cannot be reached ({error}); no verdict.") from None
    if "error" in header:
        raise AssertionError(f"{exercise.name}: the grader's judge refused the check: {header['error']}")
    cases = decode_cases(str(header["cases"]).encode(), blob)
    codes: set = set()
    replies = run_cases(exercise, fn, cases, codes)
    reply, payload = encode_replies(replies, codes)
    try:
        verdict, _ = _wire.request({"op": "replies", "run": header.get("run"), **reply}, payload)
    except (OSError, ValueError) as error:
        raise AssertionError(f"{exercise.name}: the grader's judge did not answer ({error}); no verdict.") from None
    if not verdict.get("passed"):
        raise AssertionError(str(verdict.get("message", f"{exercise.name}: failed")))
    if not quiet:
        print(verdict.get("message", ""))


def _make_check(exercise: Exercise) -> Callable:
    def check(fn: Callable, hidden: bool = False) -> None:
        run_check(exercise, fn, hidden=hidden)

    check.__name__ = check.__qualname__ = exercise.name
    check.__doc__ = (f"Check your `{exercise.name}`: raises AssertionError with advice, or prints one line.\n\n"
                     f"Expected: {exercise.hint}\nhidden=True runs the harder cases used for grading.")
    return check


def own_or_reference(fn: Callable, name: str) -> Callable:
    """Your ``fn`` if it passes its public check, else the course's reference version (with a visible notice)."""
    if name not in EXERCISES:
        raise KeyError(f"own_or_reference: no exercise named {name!r}; the exercises are {', '.join(EXERCISES)}")
    exercise = EXERCISES[name]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            run_check(exercise, fn, quiet=True, local=True)     # a demonstration, never a graded verdict
        return fn
    except AssertionError as error:
        reason = str(error).splitlines()[0]
    except Exception as error:  # e.g. fn is not a function at all
        reason = f"{type(error).__name__}: {error}"
    print(f"Note: your {name} does not pass its check yet ({reason}).\n"
          f"The demonstrations below use the course's reference version, alignlab.reference.{name}.")
    return reference_function(name)


globals().update({name: _make_check(e) for name, e in EXERCISES.items()})

__all__ = [*EXERCISES, "own_or_reference"]
