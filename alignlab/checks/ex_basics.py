"""Exercises of notebooks 00 and 01: log-softmax, Bradley-Terry, token and sequence log-probabilities, the SFT loss."""
from __future__ import annotations

import torch

from ._core import Case, Exercise, generator, randint, randn, spans
from .mistakes import MISTAKES


def _log_softmax_cases() -> list[Case]:
    g = generator(100)
    big = randn(g, 2, 6, scale=300.0) + torch.tensor([[1000.0], [-700.0]])
    return [
        Case("random logits of shape (2, 3, 5)", {"logits": randn(g, 2, 3, 5, scale=3.0)}),
        Case("a single row of 8 logits, shape (8,)", {"logits": randn(g, 8, scale=2.0)}),
        Case("equal logits: every log-probability is log(1/4)", {"logits": torch.full((2, 4), 7.0)}),
        Case("large logits (up to about 1500): exp overflows unless the maximum is subtracted", {"logits": big}),
        Case("very negative logits (around -10000)", {"logits": randn(g, 3, 4, scale=50.0, shift=-1e4)}, hidden=True),
        Case("bfloat16 logits: compute in float32", {"logits": randn(g, 3, 7, scale=5.0, dtype=torch.bfloat16)}),
        Case("a batch of one, shape (1, 1, 6)", {"logits": randn(g, 1, 1, 6)}, hidden=True),
        Case("gradient of the log-probabilities with respect to the logits", {"logits": randn(g, 2, 5, scale=2.0)},
             hidden=True, grad=("logits",)),
    ]


def _bt_cases() -> list[Case]:
    g = generator(101)
    same = randn(g, 3)
    return [
        Case("rewards of shape (4,)", {"reward_a": randn(g, 4, scale=2.0), "reward_b": randn(g, 4, scale=2.0)}),
        Case("equal rewards: the probability is 0.5", {"reward_a": same, "reward_b": same.clone()}),
        Case("broadcasting (3, 1) against (4,): a (3, 4) table", {"reward_a": randn(g, 3, 1), "reward_b": randn(g, 4)}),
        Case("large rewards (about 800): exp overflows", {"reward_a": randn(g, 5, scale=300.0, shift=800.0),
                                                           "reward_b": randn(g, 5, scale=300.0, shift=800.0)}),
        Case("a 0-d reward against a batch (5,)", {"reward_a": torch.tensor(0.7), "reward_b": randn(g, 5)}, hidden=True),
        Case("a batch of one", {"reward_a": randn(g, 1), "reward_b": randn(g, 1)}, hidden=True),
        Case("gradient with respect to both rewards", {"reward_a": randn(g, 4), "reward_b": randn(g, 4)},
             hidden=True, grad=("reward_a", "reward_b")),
    ]


def _token_cases() -> list[Case]:
    g = generator(102)
    return [
        Case("logits (2, 5, 7) and input_ids (2, 5)", {"logits": randn(g, 2, 5, 7, scale=2.0), "input_ids": randint(g, 7, 2, 5)}),
        Case("T = 2 (one predicted token per row), V = 11", {"logits": randn(g, 3, 2, 11, scale=2.0), "input_ids": randint(g, 11, 3, 2)}),
        Case("a uniform model (equal logits) gives log(1/V) = log(1/5) everywhere",
             {"logits": torch.full((2, 4, 5), 3.0), "input_ids": randint(g, 5, 2, 4)}),
        Case("bfloat16 logits (2, 6, 50): the result must be accurate float32",
             {"logits": randn(g, 2, 6, 50, scale=4.0, dtype=torch.bfloat16), "input_ids": randint(g, 50, 2, 6)}),
        Case("large logits (about 1000)", {"logits": randn(g, 2, 4, 9, scale=400.0, shift=1000.0), "input_ids": randint(g, 9, 2, 4)}, hidden=True),
        Case("a batch of one", {"logits": randn(g, 1, 6, 13, scale=2.0), "input_ids": randint(g, 13, 1, 6)}, hidden=True),
        Case("gradient with respect to the logits", {"logits": randn(g, 2, 4, 6, scale=2.0), "input_ids": randint(g, 6, 2, 4)},
             hidden=True, grad=("logits",)),
    ]


def _seq_cases() -> list[Case]:
    g = generator(103)

    def logps(B, T):  # token log-probs, all negative
        return -randn(g, B, T - 1).abs() * 2 - 0.1

    right = spans(7, [(2, 5), (3, 7), (1, 4)])        # prompt, completion, right padding
    left = spans(8, [(5, 8), (2, 8), (6, 8)])          # left padding + prompt, completion at the end
    return [
        Case("right-padded completions after prompts of different lengths", {"token_logps": logps(3, 7), "completion_mask": right}),
        Case("the same with average=True", {"token_logps": logps(3, 7), "completion_mask": right.clone(), "average": True}),
        Case("left-padded prompts, completions at the end", {"token_logps": logps(3, 8), "completion_mask": left}, hidden=True),
        Case("a float completion mask, average=True", {"token_logps": logps(3, 7), "completion_mask": right.float(), "average": True},
             hidden=True),
        Case("a batch of one", {"token_logps": logps(1, 6), "completion_mask": spans(6, [(3, 5)])}, hidden=True),
        Case("gradient: masked positions receive none", {"token_logps": logps(3, 7), "completion_mask": right.clone()},
             hidden=True, grad=("token_logps",)),
        Case("gradient with average=True", {"token_logps": logps(3, 8), "completion_mask": left.clone(), "average": True},
             hidden=True, grad=("token_logps",)),
    ]


def _sft_cases() -> list[Case]:
    g = generator(104)

    def case(name, rows, T, V=11, scale=2.0, shift=0.0, dtype=torch.float32, mask_dtype=torch.long, **kw):
        mask = spans(T, rows, dtype=mask_dtype)
        return Case(name, {"logits": randn(g, len(rows), T, V, scale=scale, shift=shift, dtype=dtype),
                           "input_ids": randint(g, V, len(rows), T), "completion_mask": mask}, **kw)

    right = [(2, 5), (3, 7), (1, 3)]              # prompt, completion of 3, 4 and 2 tokens, right padding
    uneven = [(2, 3), (1, 8), (4, 6)]             # completions of 1, 7 and 2 tokens
    full = [(3, 6), (2, 6)]                       # prompt then completion to the end: no padding
    left = [(4, 7), (2, 7), (5, 7)]               # left padding + prompt, completion at the end
    return [
        case("prompts, completions and right padding: logits (3, 7, 11)", right, 7),
        case("completions of 1, 7 and 2 tokens: one mean over all completion tokens of the batch", uneven, 8),
        case("large logits (about 1000, spread 300): use log-softmax, not log(softmax)", right, 7, scale=300.0, shift=1000.0),
        case("bfloat16 logits: compute in float32", right, 7, V=50, scale=4.0, dtype=torch.bfloat16),
        case("an all-zero completion mask raises ValueError (nothing to average)", [(0, 0), (0, 0)], 5, raises="ValueError"),
        case("no padding: every position after the prompt is a completion token", full, 6, hidden=True),
        case("left padding, completions at the end", left, 7, hidden=True),
        case("a row without completion tokens: the mean is over the others' tokens", [(2, 6), (0, 0), (1, 3)], 6, hidden=True),
        case("a bool completion mask", right, 7, mask_dtype=torch.bool, hidden=True),
        case("a float completion mask, a batch of one", [(3, 8)], 9, V=13, mask_dtype=torch.float32, hidden=True),
        case("very negative and very large logits (around -10000 and 5000)", uneven, 8, scale=5000.0, shift=-1e4, hidden=True),
        case("gradient with respect to the logits: prompt and padding positions receive none", right, 7,
             hidden=True, grad=("logits",)),
        case("gradient, rows of uneven lengths (each token weighs 1 / all completion tokens)", uneven, 8,
             hidden=True, grad=("logits",)),
    ]


def _extra_precision(case: Case, outputs: tuple) -> str | None:
    out = outputs[0]
    if isinstance(out, torch.Tensor) and out.dtype in (torch.float16, torch.bfloat16):
        return (f"the result is {str(out.dtype).replace('torch.', '')}; compute in at least float32 "
                "(`.float()` before the log-softmax): low precision loses about 2 digits.")
    return None


EXERCISES = [
    Exercise("log_softmax", build=_log_softmax_cases, mistakes=MISTAKES["log_softmax"], extra=_extra_precision,
             hint="log_softmax(x) = x - max - log(sum(exp(x - max))) along the last dimension."),
    Exercise("bradley_terry_probability", build=_bt_cases, mistakes=MISTAKES["bradley_terry_probability"],
             hint="P(a preferred over b) = sigmoid(reward_a - reward_b), elementwise with broadcasting."),
    Exercise("token_logprobs", build=_token_cases, mistakes=MISTAKES["token_logprobs"], extra=_extra_precision,
             hint="entry t is log p(x[t+1] | x[..t]): log_softmax(logits[:, :-1]) gathered at input_ids[:, 1:], in float32."),
    Exercise("sequence_logprob", build=_seq_cases, mistakes=MISTAKES["sequence_logprob"],
             hint="sum of token_logps weighted by completion_mask[:, 1:] (divide by its count when average=True)."),
    Exercise("sft_loss", build=_sft_cases, mistakes=MISTAKES["sft_loss"], extra=_extra_precision,
             hint="log_softmax(logits[:, :-1]) gathered at input_ids[:, 1:], weighted by completion_mask[:, 1:]; "
                  "minus their sum divided by the number of completion tokens; an all-zero mask raises ValueError."),
]
