"""Exercises of notebook 06: Schulman's KL estimators and GRPO's clipped loss with three aggregations."""
from __future__ import annotations

import torch

from ._core import Case, Exercise, Mistake, generator, randn, spans
from .mistakes import MISTAKES

RIGHT = [(0, 4), (0, 6), (0, 2)]
AFTER_PROMPT = [(2, 5), (1, 6), (3, 4)]
UNEVEN = [(0, 1), (0, 6), (0, 3), (0, 5)]     # lengths 1, 6, 3, 5: the aggregations differ


def _m(mask):
    return mask.double()


def _k(lp, ref, mask, *, inverted=False, half=0.5, masked=True, k3_sign=1.0):
    lr = (lp - ref) if inverted else (ref - lp)
    m = _m(mask) if masked else torch.ones_like(lp)
    k1 = -lr * m
    k2 = half * lr ** 2 * m
    k3 = ((torch.exp(lr) - 1) - k3_sign * lr) * m
    return k1, k2, k3


KL_MISTAKES = [
    Mistake("k2 without the 1/2", "k2 = 0.5 * (log ratio) ** 2: the 1/2 makes it match KL to second order.",
            lambda lp, ref, m: _k(lp, ref, m, half=1.0)[1], output=1),
    Mistake("k3 with the ratio inverted", "k3 uses r = pi_ref / pi = exp(ref_logprobs - logprobs): (r - 1) - log r.",
            lambda lp, ref, m: _k(lp, ref, m, inverted=True)[2], output=2),
    Mistake("k3 with + log r", "k3 = (r - 1) - log r: subtract log r (then it is never negative).",
            lambda lp, ref, m: _k(lp, ref, m, k3_sign=-1.0)[2], output=2),
    Mistake("k1 sign flipped", "k1 = logprobs - ref_logprobs = -log r (the sampled log-ratio of policy over reference).",
            lambda lp, ref, m: -_k(lp, ref, m)[0], output=0),
    Mistake("not masked", "Multiply each estimator by the mask: padding positions are 0.",
            lambda lp, ref, m: _k(lp, ref, m, masked=False), output=None),
]


def _agg(losses, mask, aggregation):
    m = _m(mask)
    if aggregation == "sequence_mean":
        return ((losses * m).sum(1) / m.sum(1)).mean()
    if aggregation == "token_mean":
        return (losses * m).sum() / m.sum()
    if aggregation == "constant":
        return (losses * m).sum() / (m.shape[0] * m.shape[1])
    return (losses * m).sum() / m.shape[0]                       # "sum over tokens, mean over rows"


def _grpo(lp, old, adv, mask, c, aggregation, *, combine=torch.maximum, sign=-1.0, clip="ratio", used=None):
    a = adv[:, None]
    ratio = torch.exp(lp - old)
    if clip == "ratio":
        clipped = torch.clamp(ratio, 1 - c, 1 + c)
    elif clip == "log":
        clipped = torch.exp(torch.clamp(lp - old, -c, c))
    else:
        clipped = ratio
    if clip == "none":
        losses = sign * a * ratio
    else:
        losses = combine(sign * a * ratio, sign * a * clipped)
    return _agg(losses, mask, used or aggregation)



ADVICE = {
    "sequence_mean": "GRPO: the mean over rows of each row's masked mean (sum over its tokens / its length).",
    "token_mean": "DAPO: one mean over all masked tokens of the batch (sum of l * mask / sum of mask).",
    "constant": "Dr. GRPO: sum of l * mask divided by a fixed number, B * T (the padded width), not by the lengths.",
    "sum_rows": "no aggregation divides by B alone: pick sequence_mean, token_mean or constant.",
}


def _aggregation_mistake(used):
    def fn(lp, old, adv, m, c, aggregation):   # always aggregates as ``used``, whatever was asked
        return _grpo(lp, old, adv, m, c, aggregation, used=used)
    label = {"sequence_mean": "sequence_mean (GRPO)", "token_mean": "token_mean (DAPO)",
             "constant": "constant (Dr. GRPO)", "sum_rows": "sum over tokens, mean over rows"}[used]
    return Mistake(f"used the {label} aggregation", "Check which aggregation was asked for. " + ADVICE[used], fn)


GRPO_MISTAKES = [
    *(_aggregation_mistake(u) for u in ("sequence_mean", "token_mean", "constant", "sum_rows")),
    Mistake("min instead of max", "The loss is the max of the two negated terms (the pessimistic bound).",
            lambda *a: _grpo(*a, combine=torch.minimum)),
    Mistake("minus sign missing", "Minimizing the loss must raise A * ratio: negate it, -A * ratio.",
            lambda *a: _grpo(*a, sign=1.0)),
    Mistake("clip on the wrong term: the log-ratio", "Clip the ratio to [1-c, 1+c], not the log-ratio to [-c, c].",
            lambda *a: _grpo(*a, clip="log")),
    Mistake("no clipping", "Take the max of -A * ratio and -A * clip(ratio, 1-c, 1+c).", lambda *a: _grpo(*a, clip="none")),
]

MISTAKES.setdefault("kl_estimators", KL_MISTAKES)
MISTAKES.setdefault("grpo_policy_loss", GRPO_MISTAKES)


def _kl_cases() -> list[Case]:
    g = generator(600)

    def case(name, rows, T, hidden=False, scale=0.5, equal=False, grad=False):
        mask = spans(T, rows)
        lp = -randn(g, len(rows), T).abs() * 2
        ref = lp.clone() if equal else lp + randn(g, len(rows), T, scale=scale)
        ref = torch.where(mask.bool(), ref, torch.full_like(ref, -30.0))      # padding holds junk
        return Case(name, {"logprobs": lp, "ref_logprobs": ref, "mask": mask}, hidden=hidden,
                    grad=("logprobs",) if grad else ())

    return [
        case("right-padded completions, log-ratios about 0.5", RIGHT, 6),
        case("completions after a prompt, large log-ratios (about 2)", AFTER_PROMPT, 6, scale=2.0),
        case("policy equals reference: every estimator is 0", RIGHT, 6, equal=True),
        case("uneven lengths, junk log-probs in the padding", UNEVEN, 6, hidden=True, scale=1.0),
        case("a batch of one", [(1, 5)], 6, hidden=True),
        case("gradient into logprobs: none at masked positions", RIGHT, 6, hidden=True, grad=True),
    ]


def _grpo_cases() -> list[Case]:
    g = generator(601)

    def case(name, rows, T, aggregation, c=0.2, hidden=False, equal=False, grad=False):
        mask = spans(T, rows)
        old = -randn(g, len(rows), T).abs() * 2
        lp = old.clone() if equal else old + randn(g, len(rows), T, scale=0.3)
        adv = randn(g, len(rows))
        return Case(name, {"logprobs": lp, "old_logprobs": old, "advantages": adv, "mask": mask, "clip_range": c,
                           "aggregation": aggregation}, hidden=hidden, grad=("logprobs",) if grad else ())

    return [
        case("sequence_mean (GRPO), uneven lengths", UNEVEN, 6, "sequence_mean"),
        case("token_mean (DAPO), uneven lengths", UNEVEN, 6, "token_mean"),
        case("constant (Dr. GRPO), uneven lengths", UNEVEN, 6, "constant"),
        case("policy equals old policy, sequence_mean: -mean of A", RIGHT, 6, "sequence_mean", equal=True),
        case("completions after a prompt, token_mean, clip_range = 0.1", AFTER_PROMPT, 6, "token_mean", c=0.1, hidden=True),
        case("completions after a prompt, constant", AFTER_PROMPT, 6, "constant", hidden=True),
        case("gradient into logprobs, sequence_mean", UNEVEN, 6, "sequence_mean", hidden=True, grad=True),
        case("gradient into logprobs, constant", RIGHT, 6, "constant", hidden=True, grad=True),
        Case("an unknown aggregation raises ValueError",
             {"logprobs": torch.zeros(2, 3), "old_logprobs": torch.zeros(2, 3), "advantages": torch.ones(2),
              "mask": torch.ones(2, 3, dtype=torch.long), "clip_range": 0.2, "aggregation": "mean"}, raises="ValueError"),
    ]


EXERCISES = [
    Exercise("kl_estimators", outputs=("k1", "k2", "k3"), build=_kl_cases, mistakes=KL_MISTAKES,
             hint="log r = ref_logprobs - logprobs; k1 = -log r, k2 = 0.5 (log r)^2, k3 = (r - 1) - log r; each times the mask."),
    Exercise("grpo_policy_loss", build=_grpo_cases, mistakes=GRPO_MISTAKES,
             hint="l = max(-A ratio, -A clip(ratio, 1-c, 1+c)) per token, A broadcast over the row; then sequence_mean, "
                  "token_mean or constant (divide by B * T)."),
]
