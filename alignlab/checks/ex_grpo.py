"""Exercises of notebook 07: Schulman's KL estimators and GRPO's clipped loss with three aggregations."""
from __future__ import annotations

import torch

from ._core import Case, Exercise, generator, randn, spans
from .mistakes import MISTAKES

RIGHT = [(0, 4), (0, 6), (0, 2)]
AFTER_PROMPT = [(2, 5), (1, 6), (3, 4)]
UNEVEN = [(0, 1), (0, 6), (0, 3), (0, 5)]     # lengths 1, 6, 3, 5: the aggregations differ


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

    g_empty = generator(602)                      # its own draws, so the cases above keep theirs
    old_empty = -randn(g_empty, 3, 4).abs() * 2
    lp_empty = old_empty + randn(g_empty, 3, 4, scale=0.3)
    return [
        case("sequence_mean (GRPO), uneven lengths", UNEVEN, 6, "sequence_mean"),
        case("token_mean (DAPO), uneven lengths", UNEVEN, 6, "token_mean"),
        case("constant (Dr. GRPO), uneven lengths", UNEVEN, 6, "constant"),
        case("policy equals old policy, sequence_mean: -mean of A", RIGHT, 6, "sequence_mean", equal=True),
        case("completions after a prompt, token_mean, clip_range = 0.1", AFTER_PROMPT, 6, "token_mean", c=0.1, hidden=True),
        case("completions after a prompt, constant", AFTER_PROMPT, 6, "constant", hidden=True),
        case("gradient into logprobs, sequence_mean", UNEVEN, 6, "sequence_mean", hidden=True, grad=True),
        case("gradient into logprobs, constant", RIGHT, 6, "constant", hidden=True, grad=True),
        Case("sequence_mean with a row of no completion tokens (all-masked): it contributes 0, not NaN",
             {"logprobs": lp_empty, "old_logprobs": old_empty, "advantages": torch.tensor([0.7, -1.3, 1.1]),
              "mask": spans(4, [(0, 3), (0, 0), (1, 3)]), "clip_range": 0.2, "aggregation": "sequence_mean"}),
        Case("an unknown aggregation raises ValueError",
             {"logprobs": torch.zeros(2, 3), "old_logprobs": torch.zeros(2, 3), "advantages": torch.ones(2),
              "mask": torch.ones(2, 3, dtype=torch.long), "clip_range": 0.2, "aggregation": "mean"}, raises="ValueError"),
    ]


EXERCISES = [
    Exercise("kl_estimators", outputs=("k1", "k2", "k3"), build=_kl_cases, mistakes=MISTAKES["kl_estimators"],
             hint="log r = ref_logprobs - logprobs; k1 = -log r, k2 = 0.5 (log r)^2, k3 = (r - 1) - log r; each times the mask."),
    Exercise("grpo_policy_loss", build=_grpo_cases, mistakes=MISTAKES["grpo_policy_loss"],
             hint="l = max(-A ratio, -A clip(ratio, 1-c, 1+c)) per token, A broadcast over the row; then sequence_mean, "
                  "token_mean or constant (divide by B * T)."),
]
