"""Exercises of notebook 02: the last real token, the pairwise reward loss, the KL of best-of-n."""
from __future__ import annotations

import torch

from ._core import Case, Exercise, generator, randn, spans
from .mistakes import MISTAKES


def _last_cases() -> list[Case]:
    g = generator(200)
    lengths = torch.randint(1, 40, (6,), generator=g).tolist()
    starts = torch.randint(0, 24, (6,), generator=g).tolist()
    long_rows = [(s, min(64, s + n)) if i % 2 else (64 - n, 64) for i, (s, n) in enumerate(zip(starts, lengths))]
    return [
        Case("right padding", {"attention_mask": spans(5, [(0, 3), (0, 5), (0, 1)])}),
        Case("left padding", {"attention_mask": spans(5, [(2, 5), (1, 5), (0, 5)])}),
        Case("left-padded prompt and right-padded completion in one batch", {"attention_mask": spans(6, [(2, 5), (0, 3), (1, 6)])},
             hidden=True),
        Case("a batch of one whose only token is last", {"attention_mask": spans(4, [(3, 4)])}, hidden=True),
        Case("a row of a single token at position 0", {"attention_mask": spans(3, [(0, 1), (0, 3)])}, hidden=True),
        Case("six rows of length 64, mixed padding", {"attention_mask": spans(64, long_rows)}, hidden=True),
    ]


def _pairwise_cases() -> list[Case]:
    g = generator(201)
    same = randn(g, 4)
    return [
        Case("four pairs, no margin", {"chosen_rewards": randn(g, 4, scale=2.0), "rejected_rewards": randn(g, 4, scale=2.0)}),
        Case("chosen equals rejected: the loss is ln 2", {"chosen_rewards": same, "rejected_rewards": same.clone()}),
        Case("a margin per pair, shape (4,)", {"chosen_rewards": randn(g, 4, scale=2.0), "rejected_rewards": randn(g, 4, scale=2.0),
                                               "margin": randn(g, 4).abs()}),
        Case("large gaps (about 1000): log(sigmoid) overflows",
             {"chosen_rewards": torch.tensor([-600.0, 400.0, 3.0]), "rejected_rewards": torch.tensor([500.0, -600.0, -1.0])}),
        Case("a float margin", {"chosen_rewards": randn(g, 3), "rejected_rewards": randn(g, 3), "margin": 0.5}, hidden=True),
        Case("a batch of one", {"chosen_rewards": randn(g, 1), "rejected_rewards": randn(g, 1)}, hidden=True),
        Case("gradient with respect to both rewards", {"chosen_rewards": randn(g, 4, scale=2.0), "rejected_rewards": randn(g, 4, scale=2.0)},
             hidden=True, grad=("chosen_rewards", "rejected_rewards")),
    ]


def _bon_cases() -> list[Case]:
    return ([Case(f"n = {n}", {"n": n}) for n in (1, 2, 4, 16)]
            + [Case(f"n = {n}", {"n": n}, hidden=True) for n in (3, 1000, 10**6)])


def _extra_long(case: Case, outputs: tuple) -> str | None:
    out = outputs[0]
    if isinstance(out, torch.Tensor) and out.dtype != torch.long:
        return f"the result is {str(out.dtype).replace('torch.', '')}; positions are indices: return a long tensor (`.long()`)."
    return None


def _extra_number(case: Case, outputs: tuple) -> str | None:
    out = outputs[0]
    if isinstance(out, torch.Tensor):
        return "return a Python float (for example `float(...)` or math.log), not a tensor."
    return None


EXERCISES = [
    Exercise("last_token_index", kind="long", build=_last_cases, mistakes=MISTAKES["last_token_index"], extra=_extra_long,
             hint="the position of the last 1 in each row, for left and right padding alike."),
    Exercise("pairwise_reward_loss", build=_pairwise_cases, mistakes=MISTAKES["pairwise_reward_loss"],
             hint="mean of -logsigmoid(chosen - rejected - margin); F.logsigmoid stays finite for any gap."),
    Exercise("best_of_n_kl", kind="number", build=_bon_cases, mistakes=MISTAKES["best_of_n_kl"], extra=_extra_number,
             hint="log n - (n - 1) / n, in nats, as a Python float."),
]
