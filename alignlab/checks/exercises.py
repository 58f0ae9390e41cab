"""One check per exercise: ``checks.NAME(fn, hidden=False)``, and ``own_or_reference`` for demonstrations.

A check runs the learner's function on the exercise's stored public cases (or on
its hidden cases, built from the grader's seed and never stored), compares every output with the float64 reference within a tolerance
that scales with the expected magnitude, checks gradients where a case asks,
and raises an AssertionError that says which case failed, on which inputs,
expected against got, and which known mistake the answer matches. On success
it prints one line to stdout and nothing to stderr.
"""
from __future__ import annotations

import contextlib
import io
import math
import numbers
from typing import Any, Callable

import torch
from torch import Tensor

from . import ex_basics, ex_dpo, ex_grpo, ex_pg, ex_ppo, ex_reward
from ._core import (RAISED, Case, Exercise, _quiet, call_learner, case_scale, close, describe, describe_inputs, diagnose,
                    hidden_cases, learner_args, load_cases, reference_function, tolerances)
from ._core import prepare_hidden as _prepare_hidden

EXERCISES: dict[str, Exercise] = {e.name: e for m in (ex_basics, ex_reward, ex_pg, ex_ppo, ex_dpo, ex_grpo) for e in m.EXERCISES}


def _fail(exercise: Exercise, case: Case, what: str, detail: str = "", diagnosis: str = "") -> None:
    where = "hidden case" if case.hidden else "case"
    raise AssertionError(
        f"{exercise.name}: {where} '{case.name}': {what}\n  inputs:\n{describe_inputs(case.args)}"
        f"{detail}{diagnosis}\n  Hint: {exercise.hint}")


def _unpack(exercise: Exercise, case: Case, result: Any) -> tuple:
    if exercise.single:
        if isinstance(result, tuple):
            _fail(exercise, case, f"expected one value, got a tuple of {len(result)}.")
        return (result,)
    names = ", ".join(exercise.outputs)
    if not isinstance(result, (tuple, list)) or len(result) != len(exercise.outputs):
        _fail(exercise, case, f"expected a tuple ({names}), got {describe(result)}.")
    return tuple(result)


def _compare(exercise: Exercise, case: Case, index: int, got: Any, expected: Any) -> None:
    label = "" if exercise.single else f"output '{exercise.outputs[index]}': "
    shown = f"\n  expected: {describe(expected)}\n  got:      {describe(got)}"
    if exercise.kind == "number":
        if isinstance(got, bool) or not isinstance(got, numbers.Real):
            _fail(exercise, case, f"{label}expected a Python float, got {type(got).__name__}.", shown)
        got_t = torch.tensor(float(got), dtype=torch.float64)
        expected_t = torch.tensor(float(expected), dtype=torch.float64)
    else:
        if not isinstance(got, Tensor):
            _fail(exercise, case, f"{label}expected a torch.Tensor, got {type(got).__name__} "
                                  "(keep it a tensor: no .item(), .tolist() or numpy).", shown)
        if tuple(got.shape) != tuple(expected.shape):
            _fail(exercise, case, f"{label}wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}.", shown,
                  diagnose(exercise, case, index, got.detach()))
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
    diagnosis = diagnose(exercise, case, index, got_t)
    if not torch.isfinite(got_t).all() and torch.isfinite(expected_t).all():
        _fail(exercise, case, f"{label}your result contains NaN or inf where the expected values are finite.", shown, diagnosis)
    if got_t.numel() and (got_t == 0).all():
        _fail(exercise, case, f"{label}your result is all zeros.", shown, diagnosis)
    worst = (got_t - expected_t).abs().max().item() if got_t.numel() else math.nan
    _fail(exercise, case, f"{label}wrong values (largest error {worst:.3g}; tolerance {atol:.2g} + {rtol:.0e} x |expected|).",
          shown, diagnosis)


def _check_gradients(exercise: Exercise, case: Case, args: list, outputs: tuple) -> None:
    out = outputs[exercise.grad_output]
    label = exercise.outputs[exercise.grad_output]
    inputs = {n: a for n, a in zip(case.args, args) if n in case.grad}
    if not isinstance(out, Tensor) or not out.requires_grad:
        _fail(exercise, case, f"no gradient flows from '{label}' back to {', '.join(inputs)}. Did you detach, call .item(), "
                              "use numpy, build a new tensor with torch.tensor(...), or work under torch.no_grad()?")
    weight = case.grad_weight.double() if case.grad_weight is not None else torch.ones((), dtype=torch.float64)
    try:
        with _quiet():
            grads = torch.autograd.grad((out.double() * weight).sum(), list(inputs.values()), allow_unused=True)
    except Exception as error:
        _fail(exercise, case, f"backpropagating through your result failed: {type(error).__name__}: {error}")
    for (name, _), got in zip(inputs.items(), grads):
        expected = case.expected_grads[name].double()
        if got is None and name in exercise.constants:
            continue                        # a constant of the computation: no gradient is the right answer
        if got is None:
            _fail(exercise, case, f"no gradient reaches '{name}': the result does not depend on it through autograd.")
        got = got.detach().cpu().double()
        if name in exercise.constants and (expected == 0).all() and (got != 0).any():
            _fail(exercise, case, f"gradient reaches '{name}', which must be a constant. {exercise.constants[name]}")
        scale = max(case_scale(case), float(expected.abs().max()) if expected.numel() else 1.0)
        ok = close(got, expected, 1e-4, 1e-5 * scale)
        if ok:
            continue
        shown = f"\n  expected gradient: {describe(expected)}\n  got gradient:      {describe(got)}"
        masked = expected == 0
        if masked.any() and (got[masked] != 0).any():
            _fail(exercise, case, f"positions whose gradient should be 0 (masked, padding or clipped) receive gradient in '{name}'.", shown)
        _fail(exercise, case, f"wrong gradient with respect to '{name}' (of sum(weights * {label}) for fixed random weights).", shown)


def run_check(exercise: Exercise, fn: Callable, hidden: bool = False, quiet: bool = False) -> None:
    """Run the public (or hidden) cases of one exercise; raise AssertionError on the first failure."""
    if not callable(fn):
        raise AssertionError(f"{exercise.name}: pass your function itself, for example checks.{exercise.name}({exercise.name}).")
    cases = hidden_cases(exercise) if hidden else load_cases(exercise)
    for case in cases:
        args = learner_args(case)
        result = call_learner(exercise, fn, case, args)
        if case.raises:
            if result is not RAISED:
                _fail(exercise, case, f"expected your function to raise {case.raises}, but it returned {describe(result)}.")
            continue
        outputs = _unpack(exercise, case, result)
        if exercise.only_on_mask:           # positions outside the mask are not graded (values nor gradient)
            keep = case.args[exercise.only_on_mask].bool()
            outputs = tuple(torch.where(keep, o, torch.zeros_like(o)) if isinstance(o, Tensor) and o.shape == keep.shape
                            else o for o in outputs)
        for i, (got, expected) in enumerate(zip(outputs, case.expected)):
            _compare(exercise, case, i, got, expected)
        message = exercise.extra(case, outputs) if exercise.extra else None
        if message:
            _fail(exercise, case, message)
        if case.grad:
            _check_gradients(exercise, case, args, outputs)
    if not quiet:
        print(f"{exercise.name}: {'hidden' if hidden else 'public'} check passed ({len(cases)} cases).")


def _make_check(exercise: Exercise) -> Callable:
    def check(fn: Callable, hidden: bool = False) -> None:
        run_check(exercise, fn, hidden=hidden)

    check.__name__ = check.__qualname__ = exercise.name
    check.__doc__ = (f"Check your `{exercise.name}`: raises AssertionError with advice, or prints one line.\n\n"
                     f"Expected: {exercise.hint}\nhidden=True runs the harder cases used for grading.")
    return check


def prepare_hidden(seed: int | None = None) -> int:
    """Build every exercise's hidden cases now, from the grader's seed (``$ALIGNLAB_HIDDEN_SEED``); returns it."""
    return _prepare_hidden(EXERCISES.values(), seed)


def own_or_reference(fn: Callable, name: str) -> Callable:
    """Your ``fn`` if it passes its public check, else the course's reference version (with a visible notice)."""
    if name not in EXERCISES:
        raise KeyError(f"own_or_reference: no exercise named {name!r}; the exercises are {', '.join(EXERCISES)}")
    exercise = EXERCISES[name]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            run_check(exercise, fn, quiet=True)
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
