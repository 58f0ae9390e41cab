"""The checks, as a learner meets them: right code passes quietly, wrong code fails with advice.

Every check passes a copy of the reference code (compiled anew, so not a delegation),
fails a stub, a delegation, a zero and a constant answer, names each mistake of
alignlab.checks.mistakes when a learner makes it, and writes nothing to stderr.
"""
import time
import warnings
from pathlib import Path

import pytest
import torch

from alignlab import checks, reference
from alignlab.checks.exercises import EXERCISES
from alignlab.checks.mistakes import MISTAKES

torch.set_num_threads(1)
NAMES = list(reference.__all__)
SOURCE = Path(reference.__file__).read_text()


def reference_copy():
    """The reference module's functions compiled again: same math, different code objects."""
    namespace = {"__name__": "reference_copy"}
    exec(compile(SOURCE, "reference_copy.py", "exec"), namespace)
    return namespace


COPY = reference_copy()


def as64(args):
    return [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]


def message_of(check, fn, hidden=False):
    with pytest.raises(AssertionError) as info:
        check(fn, hidden=hidden)
    return str(info.value)


def test_there_is_one_check_per_exercise():
    assert sorted(EXERCISES) == sorted(NAMES)
    from alignlab.checks import exercises, questions
    for name in NAMES:
        assert callable(getattr(checks, name)) and name in exercises.__all__
    assert callable(checks.own_or_reference) and "own_or_reference" in exercises.__all__
    assert callable(checks.multiple_choice) and "multiple_choice" in questions.__all__


@pytest.mark.parametrize("name", NAMES)
def test_reference_equivalent_code_passes_public_and_hidden_quietly(name, capfd):
    check = getattr(checks, name)
    start = time.perf_counter()
    check(COPY[name])
    public_seconds = time.perf_counter() - start
    check(COPY[name], hidden=True)
    out, err = capfd.readouterr()
    assert err == ""
    public, hidden = out.splitlines()   # one short line each
    assert public.startswith(f"{name}: public check passed") and hidden.startswith(f"{name}: hidden check passed")
    assert public_seconds < 2.0, f"public check of {name} took {public_seconds:.2f} s"


@pytest.mark.parametrize("name", NAMES)
def test_code_computing_in_float64_passes(name):
    def in_float64(*args):
        out = COPY[name](*as64(args))
        return out
    getattr(checks, name)(in_float64)
    getattr(checks, name)(in_float64, hidden=True)


@pytest.mark.parametrize("name", NAMES)
def test_a_stub_is_not_implemented_yet(name):
    def stub(*args):
        raise NotImplementedError
    assert "not implemented yet" in message_of(getattr(checks, name), stub)


@pytest.mark.parametrize("name", NAMES)
def test_delegating_to_the_reference_scores_nothing(name):
    def delegate(*args):
        return getattr(reference, name)(*args)
    for fn in (delegate, getattr(reference, name)):   # a wrapper, and `from alignlab.reference import NAME`
        message = message_of(getattr(checks, name), fn)
        assert f"alignlab.reference.{name}" in message and "scores nothing" in message


def _profiler_off(name):
    def fn(*args):
        import sys
        saved = sys.getprofile()
        sys.setprofile(None)
        try:
            return getattr(reference, name)(*args)
        finally:
            sys.setprofile(saved)
    return fn


def _copied_code(name):
    import types
    original = getattr(reference, name)
    clone = types.FunctionType(original.__code__.replace(co_name="mine"), original.__globals__, "mine",
                               original.__defaults__)

    def fn(*args):
        return clone(*args)
    return fn


def _in_a_thread(name):
    import threading

    def fn(*args):
        out = []
        worker = threading.Thread(target=lambda: out.append(getattr(reference, name)(*args)))
        worker.start()
        worker.join()
        return out[0]
    return fn


@pytest.mark.parametrize("evasion", [_profiler_off, _copied_code, _in_a_thread], ids=["setprofile(None)", "copied __code__", "a thread"])
@pytest.mark.parametrize("name", ["log_softmax", "dpo_loss", "masked_whiten", "group_relative_advantages"])
def test_delegation_that_hides_from_the_profiler_still_scores_nothing(name, evasion):
    """Issue 13: switching the profiler off, calling a copy of the reference's code, or calling it from a thread."""
    import sys
    message = message_of(getattr(checks, name), evasion(name))
    assert "scores nothing" in message, message
    assert sys.getprofile() is None


def test_calling_the_reference_of_an_earlier_exercise_is_allowed():
    def dpo_loss(pc, pr, rc, rr, beta):
        h = reference.dpo_logits(pc, pr, rc, rr)
        return -torch.nn.functional.logsigmoid(beta * h).mean(), beta * (pc - rc).detach(), beta * (pr - rr).detach()
    checks.dpo_loss(dpo_loss)
    checks.dpo_loss(dpo_loss, hidden=True)


def _answer_like(name, fill):
    """A function returning the right structure (shapes, dtypes) filled with a constant."""
    def fn(*args):
        out = COPY[name](*args)
        if isinstance(out, float):
            return float(fill)
        if isinstance(out, tuple):
            return tuple(torch.full_like(o, fill) for o in out)
        return torch.full_like(out, fill)
    return fn


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fill", [0.0, 1.0, 0.5])
def test_a_constant_answer_fails(name, fill):
    check = getattr(checks, name)
    failed = 0
    for hidden in (False, True):
        try:
            check(_answer_like(name, fill), hidden=hidden)
        except AssertionError:
            failed += 1
    assert failed >= 1
    if fill == 0.0:   # the public check alone refuses zeros: no absolute tolerance lets them through
        with pytest.raises(AssertionError):
            check(_answer_like(name, fill))


def mistaken(name, mistake):
    """A learner function that makes `mistake` (and gets the other outputs right)."""
    exercise = EXERCISES[name]

    def fn(*args):
        bad = mistake.fn(*as64(args))
        if exercise.single or mistake.output is None:
            return bad
        good = list(COPY[name](*as64(args)))
        good[mistake.output] = bad
        return tuple(good)
    return fn


@pytest.mark.parametrize("name,mistake", [pytest.param(n, m, id=f"{n}-{m.name}") for n in NAMES for m in MISTAKES[n]])
def test_each_known_mistake_fails_and_is_named(name, mistake):
    messages = []
    for hidden in (False, True):
        try:
            getattr(checks, name)(mistaken(name, mistake), hidden=hidden)
        except AssertionError as error:
            messages.append(str(error))
    assert messages, f"{name}: the checks accept the mistake '{mistake.name}'"
    assert any(mistake.name in m for m in messages), messages[0]


def test_a_failure_names_the_case_the_inputs_expected_and_got():
    def no_shift(logits, input_ids):
        return torch.log_softmax(logits.float(), -1)[:, :-1].gather(-1, input_ids[:, :-1, None]).squeeze(-1)
    message = message_of(checks.token_logprobs, no_shift)
    for part in ("case 'logits (2, 5, 7)", "inputs:", "logits = tensor of shape (2, 5, 7) float32", "expected:", "got:",
                 "known mistake gives: no shift", "Hint:"):
        assert part in message, part


def test_a_wrong_shape_is_reported_with_both_shapes():
    message = message_of(checks.sequence_logprob, lambda x, m, average=False: (x * m[:, 1:]).sum(-1, keepdim=True))
    assert "wrong shape: expected (3,), got (3, 1)" in message


def test_nan_in_the_result_gets_a_clear_message():
    message = message_of(checks.masked_mean, lambda x, mask: (x * mask).sum() / 0.0 * 0.0)
    assert "NaN or inf" in message


def test_an_exception_in_learner_code_names_its_type_and_the_case():
    def broken(logits):
        return logits.nonexistent()
    message = message_of(checks.log_softmax, broken)
    assert "AttributeError" in message and "nonexistent" in message and "case:" in message


def test_a_python_number_instead_of_a_tensor_is_refused():
    message = message_of(checks.masked_mean, lambda x, mask: float((x * mask).sum() / mask.sum()))
    assert "expected a torch.Tensor" in message


def test_gradient_cases_catch_detached_results_and_gradient_at_masked_positions():
    def detached(x, mask):
        return ((x * mask).sum() / mask.sum()).detach()
    assert "no gradient flows" in message_of(checks.masked_mean, detached, hidden=True)

    def leaky(x, mask):   # right values, but gradient reaches the masked positions
        if not mask.any():
            raise ValueError("empty mask")
        return (x * mask).sum() / mask.sum() + (x - x.detach()).sum()
    checks.masked_mean(leaky)
    assert "receive gradient" in message_of(checks.masked_mean, leaky, hidden=True)


def test_implicit_rewards_must_be_detached():
    def attached(pc, pr, rc, rr, beta):
        h = (pc - rc) - (pr - rr)
        return -torch.nn.functional.logsigmoid(beta * h).mean(), beta * (pc - rc), beta * (pr - rr)
    # issue 13: a hidden convention is graded publicly too, so "passed" in public means the hidden check will agree
    assert "detached" in message_of(checks.dpo_loss, attached)


def test_bfloat16_logits_must_be_computed_in_float32():
    def low(logits, input_ids):
        return torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    message = message_of(checks.token_logprobs, low)      # a public case has bfloat16 logits (issue 13)
    assert "low precision" in message


def test_the_contract_s_errors_are_required_publicly_and_only_where_the_docstring_states_them():
    """Issue 13: no hidden conventions. masked_mean's docstring states the ValueError: its public check asks for it;
    last_token_index's and best_of_n_kl's docstrings do not: no case grades their input validation at all."""
    def no_error(x, mask):
        mask = mask.to(x.dtype)
        return (x * mask).sum() / mask.sum()
    assert "expected your function to raise ValueError" in message_of(checks.masked_mean, no_error)
    from alignlab.checks._core import load_cases
    raising = {e.name for e in EXERCISES.values() for c in load_cases(e) if c.raises}
    assert not raising & {"last_token_index", "best_of_n_kl"}
    assert all(not c.hidden for e in EXERCISES.values() for c in load_cases(e) if c.raises)


def test_hidden_conventions_are_graded_publicly_too():
    """Issue 13: a convention a hidden case grades (upcast from bfloat16, stable log-sigmoid, eval mode) has a
    public case, so a public "passed" means the hidden cases of the same conventions are likely to pass."""
    def naive_pairwise(chosen_rewards, rejected_rewards, margin=0.0):
        return -torch.log(torch.sigmoid(chosen_rewards - rejected_rewards - margin)).mean()
    assert "large gaps" in message_of(checks.pairwise_reward_loss, naive_pairwise)

    def train_mode_copy(policy):
        import copy
        return copy.deepcopy(policy).requires_grad_(False)
    assert "training mode" in message_of(checks.make_reference, train_mode_copy)


def test_masked_whiten_does_not_grade_values_outside_the_mask():
    """Issue 13: TRL's masked_whiten leaves values at masked positions; ours zeroes them. Both pass."""
    def trl(x, mask, shift_mean=True):
        mask = mask.to(x.dtype)
        mean = (x * mask).sum() / mask.sum()
        var = ((x - mean) ** 2 * mask).sum() / (mask.sum() - 1)
        out = (x - mean) * torch.rsqrt(var + 1e-8)
        return out if shift_mean else out + mean
    checks.masked_whiten(trl)
    checks.masked_whiten(trl, hidden=True)


def test_learner_warnings_and_stderr_never_reach_stderr(capfd):
    import sys

    def noisy(reward_a, reward_b):
        warnings.warn("a learner's warning")
        print("debugging output", file=sys.stderr)
        return torch.sigmoid(reward_a - reward_b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # any warning escaping the check would raise here
        checks.bradley_terry_probability(noisy)
    out, err = capfd.readouterr()
    assert err == "" and "public check passed" in out


def test_a_non_function_is_refused_with_advice():
    assert "pass your function itself" in message_of(checks.dpo_logits, None)


def test_own_or_reference_keeps_a_passing_function_quietly(capsys):
    fn = COPY["dpo_loss"]
    assert checks.own_or_reference(fn, "dpo_loss") is fn
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("bad", ["stub", "wrong", "delegate"])
def test_own_or_reference_falls_back_to_the_reference_with_a_notice(bad, capsys):
    def stub(*args):
        raise NotImplementedError

    def wrong(pc, pr, rc, rr, beta):
        return torch.tensor(0.0), pc, pr
    fn = {"stub": stub, "wrong": wrong, "delegate": reference.dpo_loss}[bad]
    assert checks.own_or_reference(fn, "dpo_loss") is reference.dpo_loss
    out = capsys.readouterr().out
    assert "reference version" in out and "alignlab.reference.dpo_loss" in out


def test_checks_leave_the_profiler_as_they_found_it():
    import sys
    marker = []

    def profiler(frame, event, arg):
        marker.append(event)
    sys.setprofile(profiler)
    try:
        checks.masked_mean(COPY["masked_mean"])
        assert sys.getprofile() is profiler
    finally:
        sys.setprofile(None)
