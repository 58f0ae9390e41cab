"""The checks work: every wrong implementation in the catalogue loses its points, every valid one keeps them.

A wrong implementation must fail ``checks.NAME(fn)`` or ``checks.NAME(fn, hidden=True)``
with an AssertionError; when its mistake is one the checks diagnose (a name in
``alignlab.checks.mistakes.MISTAKES``), the message must name it. A function that
only calls ``alignlab.reference`` must be told so. Valid alternatives pass both checks.
"""
import contextlib
import inspect
import io

import pytest
import torch

from alignlab import checks, reference
from alignlab.checks._core import inputs_only
from alignlab.checks.exercises import EXERCISES as CHECKED
from alignlab.checks.exercises import decode_replies, encode_replies, run_cases
from alignlab.checks.mistakes import MISTAKES
from alignlab.grading.judge import Judge
from catalogue import cell_source, load_cell, slug
from catalogue.valid import VALID
from catalogue.wrong import WRONG

torch.set_num_threads(1)

EXERCISES = list(reference.__all__)
DELEGATES = "only calls the reference"


def entries(table):
    return [pytest.param(ex, label, fn, id=f"{ex}-{slug(label)}") for ex, items in table.items() for label, fn in items]


def verdict(exercise, fn, hidden):
    """None when the check passes, else its AssertionError message (other exceptions propagate)."""
    check = getattr(checks, exercise)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            check(fn, hidden=hidden)
    except AssertionError as error:
        return str(error)
    return None


def test_catalogue_covers_every_exercise():
    assert sorted(WRONG) == sorted(EXERCISES)
    assert sorted(VALID) == sorted(EXERCISES)
    for exercise in EXERCISES:
        labels = [label for label, _ in WRONG[exercise]]
        assert len(labels) >= 4, f"{exercise}: at least 3 wrong implementations plus the delegating one"
        assert DELEGATES in labels, exercise
        assert len(labels) == len(set(labels)), f"{exercise}: duplicate mistake names"
        assert 1 <= len(VALID[exercise]) <= 3, exercise


@pytest.mark.parametrize("exercise,label,fn", entries(WRONG) + entries(VALID))
def test_entry_has_the_exercise_signature_and_round_trips_as_a_cell(exercise, label, fn):
    expected = list(inspect.signature(getattr(reference, exercise)).parameters)
    assert list(inspect.signature(fn).parameters) == expected
    loaded = load_cell(cell_source(fn), exercise)
    assert loaded.__name__ == exercise
    assert list(inspect.signature(loaded).parameters) == expected


@pytest.mark.parametrize("exercise,label,fn", entries(WRONG))
def test_wrong_implementation_loses_its_points(exercise, label, fn):
    message = verdict(exercise, fn, hidden=False) or verdict(exercise, fn, hidden=True)
    assert message is not None, f"{exercise}: the checks accept the wrong implementation '{label}'"
    if label == DELEGATES:
        assert "alignlab.reference" in message and "scores nothing" in message, message
    elif label in {m.name for m in MISTAKES.get(exercise, [])}:
        assert label in message, f"the checks should name the mistake '{label}':\n{message}"


@pytest.mark.parametrize("exercise,label,fn", entries(VALID))
def test_valid_alternative_keeps_its_points(exercise, label, fn):
    for hidden in (False, True):
        message = verdict(exercise, fn, hidden=hidden)
        assert message is None, f"{exercise}: the {'hidden' if hidden else 'public'} check rejects a valid '{label}':\n{message}"


@pytest.mark.parametrize("exercise", EXERCISES)
def test_a_valid_alternative_still_passes_after_the_round_trip_through_a_cell(exercise):
    name, fn = VALID[exercise][0]
    loaded = load_cell(cell_source(fn), exercise)
    assert verdict(exercise, loaded, hidden=False) is None


# ------------------------------------------------------------------ whatever seed the grader holds
# Hidden cases are built by the judge from the grader's seed (never stored), so every verdict must hold for any
# seed: a valid answer never loses points on an unlucky draw, a wrong one never keeps them on a lucky one. The
# verdicts here go the grader's way: the learner's side runs on the cases' inputs only, its replies travel
# through the wire format, and the judge compares.
GRADER_SEEDS = (1, 20_261_202, 987_654_321)


@pytest.fixture(scope="module", params=GRADER_SEEDS, ids=lambda s: f"seed{s}")
def grader_seed(request):
    return Judge(request.param)


def judged(judge, exercise, fn, hidden):
    """None when the judge passes ``fn``, else its message."""
    cases = judge.cases(exercise, hidden)
    with contextlib.redirect_stdout(io.StringIO()):
        replies = run_cases(CHECKED[exercise], fn, inputs_only(cases))
    header, blob = encode_replies(replies, set())
    record = judge.judge(exercise, hidden, cases, decode_replies(header, blob), header["code"])
    return None if record.passed else record.message


@pytest.mark.parametrize("exercise,label,fn", entries(VALID))
def test_valid_alternative_keeps_its_points_whatever_the_grader_s_seed(exercise, label, fn, grader_seed):
    message = judged(grader_seed, exercise, fn, hidden=True)
    assert message is None, f"{exercise}: with grader seed {grader_seed.seed} the judge rejects a valid '{label}':\n{message}"


@pytest.mark.parametrize("exercise,label,fn", entries(WRONG))
def test_wrong_implementation_loses_its_points_whatever_the_grader_s_seed(exercise, label, fn, grader_seed):
    message = judged(grader_seed, exercise, fn, hidden=False) or judged(grader_seed, exercise, fn, hidden=True)
    assert message is not None, f"{exercise}: with grader seed {grader_seed.seed} the judge accepts the wrong '{label}'"
    if label in {m.name for m in MISTAKES.get(exercise, [])}:
        assert label in message, f"the judge should name the mistake '{label}':\n{message}"


# ------------------------------------------------------------------ the catalogue itself, without the checks
def g(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=g(seed), dtype=torch.float64) * scale


MASKS = torch.tensor([[0, 0, 1, 1, 1, 0, 0],     # prompt, completion, right padding
                      [0, 1, 1, 1, 1, 1, 1],     # left padding, completion to the end
                      [1, 1, 1, 1, 0, 0, 0]])    # mask starting at column 0


def logps(B=4, seed=0):
    return [-(torch.rand(B, generator=g(seed + i), dtype=torch.float64) * 40 + 5) for i in range(4)]


def inputs(exercise):
    """Inputs on which the reference and the catalogue are compared (positional, float64)."""
    B, T = MASKS.shape
    ids = torch.randint(0, 11, (B, T), generator=g(1))
    four = logps()
    masks4 = torch.cat([MASKS, torch.tensor([[0, 1, 1, 0, 0, 0, 0]])])        # two pairs: rows 0-1 chosen, 2-3 rejected
    ids4 = torch.randint(0, 11, (4, T), generator=g(2))
    huge = [torch.tensor([3e3, -3e3], dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
            torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)]
    return {
        "log_softmax": [(randn(2, 3, 11, scale=3),), (randn(2, 5, scale=1000),)],
        "bradley_terry_probability": [(randn(5, scale=2), randn(5, seed=1, scale=2)), (torch.tensor([1e4, 3.0]), torch.tensor([0.0, 1.0]))],
        "token_logprobs": [(randn(B, T, 11, scale=4), ids)],
        "sequence_logprob": [(randn(B, T - 1), MASKS, False), (randn(B, T - 1), MASKS, True)],
        "sft_loss": [(randn(B, T, 11, scale=4), ids, MASKS), (randn(B, T, 11, scale=300) + 1000, ids, MASKS)],
        "last_token_index": [(MASKS,)],
        "pairwise_reward_loss": [(randn(5), randn(5, seed=1), None), (randn(5), randn(5, seed=1), randn(5, seed=2).abs()),
                                 (torch.tensor([-1e4, 1e4], dtype=torch.float64), torch.zeros(2, dtype=torch.float64), None)],
        "best_of_n_kl": [(1,), (4,), (64,)],
        "reinforce_loss": [(-randn(B, T).abs(), (randn(B, seed=1) > 0).double(), MASKS, None),
                           (-randn(B, T).abs(), randn(B, seed=1), MASKS, 0.5),
                           (-randn(B, T).abs(), randn(B, seed=1), MASKS, randn(B, seed=2))],
        "rloo_advantages": [(torch.rand(3, 4, generator=g(0), dtype=torch.float64),),
                            (torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64),)],
        "token_entropy": [(randn(B, T, 11, scale=3), MASKS), (randn(2, 3, 5, scale=1000), torch.ones(2, 3, dtype=torch.long))],
        "kl_penalized_rewards": [(randn(B), randn(B, T, seed=1), randn(B, T, seed=2), MASKS, 0.1)],
        "masked_mean": [(randn(B, T, scale=3), MASKS)],
        "masked_whiten": [(randn(B, T, scale=3) + 2, MASKS, True), (randn(B, T, scale=3) + 2, MASKS, False)],
        "gae_advantages": [(randn(B, T), randn(B, T, seed=1) + 1, MASKS, 1.0, 0.95), (randn(B, T), randn(B, T, seed=1), MASKS, 0.9, 0.5)],
        "ppo_policy_loss": [(randn(B, T, scale=0.3), randn(B, T, seed=1, scale=0.3), randn(B, T, seed=2), MASKS, 0.2)],
        "ppo_value_loss": [(randn(B, T), randn(B, T, seed=1), randn(B, T, seed=2), MASKS, 0.2)],
        "concatenated_pair_logps": [(randn(4, T, 11, scale=4), ids4, masks4), (randn(4, T, 11, scale=300) + 1000, ids4, masks4)],
        "dpo_logits": [tuple(four)],
        "dpo_loss": [(*four, 0.1), (*huge, 1.0)],
        "dpo_preference_probability": [(*four, 0.1)],
        "dpo_gradient_weight": [(*four, 0.1)],
        "cdpo_loss": [(*four, 0.1, 0.2), (*huge, 1.0, 0.1)],
        "ipo_loss": [(*four, 0.1)],
        "simpo_loss": [(-torch.rand(4, generator=g(0), dtype=torch.float64) * 3, -torch.rand(4, generator=g(1), dtype=torch.float64) * 3, 2.0, 0.5),
                       (torch.tensor([-1e4, 0.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64), 1.0, 0.5)],
        "group_relative_advantages": [(torch.rand(3, 4, generator=g(0), dtype=torch.float64), 1e-6),
                                      (torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 3.0]], dtype=torch.float64), 1e-6)],
        "kl_estimators": [(-randn(B, T).abs(), -randn(B, T, seed=1).abs(), MASKS)],
        "grpo_policy_loss": [(randn(B, T, scale=0.3), randn(B, T, seed=1, scale=0.3), randn(B, seed=2), masks, 0.2, agg)
                             for masks in (MASKS, MASKS * torch.tensor([[1], [0], [1]]))     # the second: an all-masked row
                             for agg in ("sequence_mean", "token_mean", "constant")],
    }[exercise]


def outputs(fn, args):
    args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    out = fn(*args)
    return list(out) if isinstance(out, tuple) else [out]


def same(a, b):
    if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
        return False                                   # e.g. a tensor where a Python float is due
    if isinstance(a, torch.Tensor) and a.is_floating_point() != b.is_floating_point():
        return False                                   # e.g. float positions where long is due
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-6, atol=1e-8, equal_nan=True)


def graded_part(exercise, args, outs):
    """The outputs as a check grades them: positions outside Exercise.only_on_mask (if any) set to 0."""
    from alignlab.checks.exercises import EXERCISES
    name = getattr(EXERCISES.get(exercise), "only_on_mask", None)
    if not name:
        return outs
    keep = args[list(inspect.signature(getattr(reference, exercise)).parameters).index(name)].bool()
    return [torch.where(keep, o, torch.zeros_like(o)) if isinstance(o, torch.Tensor) and o.shape == keep.shape else o
            for o in outs]


@pytest.mark.parametrize("exercise,label,fn", entries(VALID))
def test_valid_alternative_agrees_with_the_reference(exercise, label, fn):
    ref = getattr(reference, exercise)
    for args in inputs(exercise):
        assert all(same(x, y) for x, y in zip(graded_part(exercise, args, outputs(fn, args)),
                                               graded_part(exercise, args, outputs(ref, args)), strict=True)), (label, args)


# Wrong only in what they return on inputs this table does not build (they differ on gradients,
# dtypes or the error they raise), so the value comparison below cannot see them.
NOT_A_VALUE_DIFFERENCE = {
    ("masked_mean", "nan for an all-zero mask"),
    ("dpo_loss", "rewards not detached"),
    ("dpo_loss", "gradient reaches the reference"),
    ("log_softmax", "computed in low precision"),
    ("token_logprobs", "computed in low precision"),
    ("pairwise_reward_loss", "rebuilt with torch.tensor (no gradient)"),
    ("sequence_logprob", "computed under torch.no_grad"),
    ("masked_whiten", "statistics detached from the graph"),
    ("reinforce_loss", "baseline differentiated through"),
    ("rloo_advantages", "G = 1 not refused"),
}


@pytest.mark.parametrize("exercise,label,fn", entries(WRONG))
def test_wrong_implementation_differs_from_the_reference(exercise, label, fn):
    if label == DELEGATES or (exercise, label) in NOT_A_VALUE_DIFFERENCE:
        return
    ref = getattr(reference, exercise)
    differs = False
    for args in inputs(exercise):
        try:
            got = outputs(fn, args)
        except Exception:
            differs = True
            continue
        differs |= not all(same(x, y) for x, y in zip(got, outputs(ref, args)))
    assert differs, f"{exercise}: '{label}' gives the reference's answers on every input"


def wrong_fn(exercise, label):
    return dict(WRONG[exercise])[label]


def test_the_wrong_implementations_that_differ_elsewhere_do_differ():
    x, mask = randn(2, 3), torch.zeros(2, 3)
    assert torch.isnan(wrong_fn("masked_mean", "nan for an all-zero mask")(x, mask))
    with pytest.raises(ValueError):
        reference.masked_mean(x, mask)

    four = [t.clone().requires_grad_(True) for t in logps()]
    _, chosen, rejected = wrong_fn("dpo_loss", "rewards not detached")(*four, 0.1)
    assert chosen.requires_grad and rejected.requires_grad
    loss, _, _ = wrong_fn("dpo_loss", "gradient reaches the reference")(*four, 0.1)
    loss.backward()
    assert four[0].grad is None and four[2].grad is not None

    lp, baseline = -randn(3, 4).abs().requires_grad_(True), randn(3, seed=1).requires_grad_(True)
    wrong_fn("reinforce_loss", "baseline differentiated through")(lp, randn(3, seed=2), torch.ones(3, 4), baseline).backward()
    assert baseline.grad is not None and baseline.grad.abs().sum() > 0
    assert torch.isnan(wrong_fn("rloo_advantages", "G = 1 not refused")(randn(3, 1))).all()
    with pytest.raises(ValueError):
        reference.rloo_advantages(randn(3, 1))

    logits = randn(2, 4, 50, scale=5)
    ids = torch.randint(0, 50, (2, 4), generator=g(3))
    for exercise, args in [("log_softmax", (logits,)), ("token_logprobs", (logits, ids))]:
        got = wrong_fn(exercise, "computed in low precision")(*args).double()
        expected = getattr(reference, exercise)(*args)
        assert (got - expected).abs().max() > 1e-3 * expected.abs().max()


@pytest.mark.parametrize("exercise", EXERCISES)
def test_the_reference_function_itself_scores_nothing(exercise):
    """A cell that only says `from alignlab.reference import NAME` loses the points, with the reason."""
    message = verdict(exercise, getattr(reference, exercise), hidden=False)
    assert message is not None and "scores nothing" in message


@pytest.mark.parametrize("exercise,label", [
    ("pairwise_reward_loss", "rebuilt with torch.tensor (no gradient)"),
    ("sequence_logprob", "computed under torch.no_grad"),
    ("masked_whiten", "statistics detached from the graph"),
])
def test_the_wrong_gradients_are_wrong(exercise, label):
    args = inputs(exercise)[0]
    grads = []
    for fn in (getattr(reference, exercise), wrong_fn(exercise, label)):
        first = args[0].clone().requires_grad_(True)
        out = fn(first, *args[1:])
        weight = torch.randn(out.shape, generator=g(5), dtype=torch.float64)
        grads.append(torch.autograd.grad((out * weight).sum(), first)[0] if out.requires_grad else None)
    assert grads[1] is None or not torch.allclose(grads[0], grads[1])
