"""Exercises of the policy-gradient notebook: REINFORCE's loss, RLOO advantages, per-token entropy."""
from __future__ import annotations

import math

import torch

from ._core import Case, Exercise, Mistake, generator, randn, spans
from .mistakes import LOW_PRECISION, MISTAKES

RIGHT = [(0, 2), (0, 5), (0, 3)]                 # completions from column 0, right padding
AFTER_PROMPT = [(2, 5), (1, 6), (3, 4), (2, 6)]  # a prompt first, then the completion, then padding
JUNK = -30.0                                      # log-probs in padding: counted, they change everything


def _m(mask):
    return mask.double()


def _weights(r, b, *, use_baseline=True, sign=-1.0):
    if b is None or not use_baseline:
        return r
    return r + sign * b


def _reinforce(lp, r, mask, b=None, *, reduce="sum", batch="mean", use_mask=True, use_baseline=True, b_sign=-1.0,
               loss_sign=-1.0):
    m = _m(mask) if use_mask else torch.ones_like(lp)
    w = _weights(r, b, use_baseline=use_baseline, sign=b_sign)
    if reduce == "sum":
        seq = (lp * m).sum(-1)
    else:                                                    # "mean": the mean log-prob of each row
        seq = (lp * m).sum(-1) / m.sum(-1)
    total = w * seq
    if batch == "tokens":                                    # one mean over all masked tokens of the batch
        return loss_sign * total.sum() / m.sum()
    return loss_sign * (total.mean() if batch == "mean" else total.sum())


REINFORCE_MISTAKES = [
    Mistake("log-probs averaged instead of summed", "log pi(y | x) is the SUM of the token log-probs of y (not their mean).",
            lambda lp, r, m, b=None: _reinforce(lp, r, m, b, reduce="mean")),
    Mistake("sign flipped", "Minimizing the loss must raise log pi(y) where the reward is high: loss = -mean(A * log pi(y)).",
            lambda lp, r, m, b=None: _reinforce(lp, r, m, b, loss_sign=1.0)),
    Mistake("sum over the batch instead of the mean", "Average over the B sequences of the batch.",
            lambda lp, r, m, b=None: _reinforce(lp, r, m, b, batch="sum")),
    Mistake("divided by the number of tokens", "Each row's log-probs are summed; then take the mean over the B rows, "
            "not over all masked tokens.", lambda lp, r, m, b=None: _reinforce(lp, r, m, b, batch="tokens")),
    Mistake("mask ignored", "Multiply the log-probs by the mask before summing: prompt and padding are not the policy's choices.",
            lambda lp, r, m, b=None: _reinforce(lp, r, m, b, use_mask=False)),
    Mistake("baseline ignored", "Subtract the baseline from the rewards (None means 0).",
            lambda lp, r, m, b=None: _reinforce(lp, r, m, b, use_baseline=False)),
    Mistake("baseline added instead of subtracted", "The weight of each sequence is reward - baseline.",
            lambda lp, r, m, b=None: _reinforce(lp, r, m, b, b_sign=1.0)),
]


def _loo(r, dim=1, g=None, exclude_self=True):
    n = r.shape[dim]
    others = (r.sum(dim, keepdim=True) - r) / (g if g is not None else (n - 1 if exclude_self else n))
    return r - others


RLOO_MISTAKES = [
    Mistake("RLOO including the sample itself", "Leave the sample out: its baseline is the mean of the OTHER G - 1 rewards "
            "(the group mean includes its own reward, which biases the gradient by (G - 1) / G).",
            lambda r: r - r.mean(1, keepdim=True)),
    Mistake("divided by G instead of G - 1", "There are G - 1 other samples: (sum - r) / (G - 1).", lambda r: _loo(r, g=r.shape[1])),
    Mistake("leave-one-out over the whole batch", "Each prompt is its own group: leave one out within each row.",
            lambda r: r - (r.sum() - r) / (r.numel() - 1)),
    Mistake("groups along the wrong dimension", "Groups are rows (one per prompt): work along dim=1.", lambda r: _loo(r, dim=0)),
    Mistake("divided by the group std (GRPO)", "RLOO only subtracts the leave-one-out mean; it does not divide by a std.",
            lambda r: (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)),
    Mistake("sign flipped", "The advantage is reward minus baseline: r - mean(others).", lambda r: -_loo(r)),
    Mistake("the baseline instead of the advantage", "Return r - mean(others), not mean(others).",
            lambda r: (r.sum(1, keepdim=True) - r) / (r.shape[1] - 1)),
]


def _entropy(x, mask, *, logp_fn=None, reduce="sum", masked=True, base=None, sign=-1.0, dim=-1):
    logp = logp_fn(x) if logp_fn else torch.log_softmax(x, dim)
    p = torch.softmax(x, dim) if logp_fn else logp.exp()
    terms = p * logp
    h = sign * (terms.sum(-1) if reduce == "sum" else terms.mean(-1))
    if base:
        h = h / math.log(base)
    return h * _m(mask) if masked else h


ENTROPY_MISTAKES = [
    Mistake("entropy from unnormalised logits", "Use log-probabilities, log_softmax(logits), not the raw logits: H = -sum p log p.",
            lambda x, m: -(torch.softmax(x, -1) * x).sum(-1) * _m(m)),
    Mistake("sign flipped", "Entropy is -sum p log p, which is never negative.", lambda x, m: _entropy(x, m, sign=1.0)),
    Mistake("not masked", "Multiply by the mask: positions where it is 0 are 0.", lambda x, m: _entropy(x, m, masked=False)),
    Mistake("mean over the vocabulary instead of the sum", "Sum p log p over the V entries; do not average them.",
            lambda x, m: _entropy(x, m, reduce="mean")),
    Mistake("in bits instead of nats", "Use the natural log (nats), as log_softmax does; do not divide by ln 2.",
            lambda x, m: _entropy(x, m, base=2)),
    Mistake("softmax over the wrong dimension", "The distribution is over the vocabulary: softmax along dim=-1.",
            lambda x, m: _entropy(x, m, dim=1)),
    Mistake("log of softmax underflows", "A probability that underflows to 0 gives log(0) = -inf and 0 * -inf = nan: "
            "take log_softmax(logits) and p = its exp.",
            lambda x, m: _entropy(x.float(), m, logp_fn=lambda y: torch.log(torch.softmax(y, -1))).double()),
    Mistake("exp overflow (maximum not subtracted)", "exp(1000) = inf: use torch.log_softmax (or subtract the maximum first).",
            lambda x, m: (-((x.float().exp() / x.float().exp().sum(-1, keepdim=True))
                            * torch.log(x.float().exp() / x.float().exp().sum(-1, keepdim=True))).sum(-1) * m.float()).double()),
    Mistake("log-probs as x - logsumexp(x) in float32", "For logits in the thousands, x - logsumexp(x) loses digits "
            "(torch.distributions.Categorical normalizes this way): use torch.log_softmax, which subtracts the maximum first.",
            lambda x, m: _entropy(x.float(), m, logp_fn=lambda y: y - y.logsumexp(-1, keepdim=True)).double()),
    Mistake(*LOW_PRECISION, lambda x, m: _entropy(x.bfloat16(), m).double(), loose=True),
]

MISTAKES.setdefault("reinforce_loss", REINFORCE_MISTAKES)
MISTAKES.setdefault("rloo_advantages", RLOO_MISTAKES)
MISTAKES.setdefault("token_entropy", ENTROPY_MISTAKES)


def _reinforce_cases() -> list[Case]:
    g = generator(250)

    def case(name, rows, T, baseline="none", hidden=False, grad=(), scale=1.0, binary=True):
        mask = spans(T, rows)
        lp = -randn(g, len(rows), T).abs() * 1.5 - 0.05
        lp = torch.where(mask.bool(), lp, torch.full_like(lp, JUNK))           # padding and prompt hold junk
        r = (randn(g, len(rows)) > 0).float() if binary else randn(g, len(rows), scale=scale)
        b = {"none": None, "number": 0.5, "rows": randn(g, len(rows), scale=0.5, shift=0.3)}[baseline]
        return Case(name, {"logprobs": lp, "rewards": r, "mask": mask, "baseline": b}, hidden=hidden, grad=grad)

    return [
        case("right-padded completions, 0/1 rewards, no baseline", RIGHT, 5),
        case("a number as the baseline (0.5)", RIGHT, 5, baseline="number"),
        case("a baseline per row, shape (B,); completions after a prompt", AFTER_PROMPT, 6, baseline="rows", binary=False),
        case("the baseline is a constant: no gradient may reach it", AFTER_PROMPT, 6, baseline="rows", binary=False,
             grad=("logprobs", "baseline")),
        case("large rewards (about 100), no baseline", AFTER_PROMPT, 6, binary=False, scale=100.0, hidden=True),
        case("a batch of one, a number as the baseline", [(1, 4)], 5, baseline="number", hidden=True),
        case("gradient into logprobs: masked positions receive none", AFTER_PROMPT, 6, baseline="rows", hidden=True,
             grad=("logprobs",)),
        case("gradient with a baseline per row", RIGHT, 5, baseline="rows", binary=False, hidden=True,
             grad=("logprobs", "baseline")),
    ]


def _rloo_cases() -> list[Case]:
    g = generator(251)
    equal = (randn(g, 3, 4) > 0).float()
    equal[1] = 1.0
    return [
        Case("three prompts, four samples each, 0/1 rewards", {"rewards": (randn(g, 3, 4) > 0).float()}),
        Case("two prompts, eight samples each, real rewards", {"rewards": randn(g, 2, 8, scale=2.0)}),
        Case("G = 2: each sample minus the other one", {"rewards": randn(g, 3, 2)}),
        Case("one sample per prompt (G = 1) raises ValueError", {"rewards": randn(g, 3, 1)}, raises="ValueError"),
        Case("a group whose rewards are all equal: advantages 0", {"rewards": equal}, hidden=True),
        Case("large rewards (about 500)", {"rewards": randn(g, 4, 6, scale=100.0, shift=500.0)}, hidden=True),
        Case("one prompt, five samples", {"rewards": randn(g, 1, 5)}, hidden=True),
        Case("gradient with respect to the rewards", {"rewards": randn(g, 2, 5)}, hidden=True, grad=("rewards",)),
    ]


def _entropy_cases() -> list[Case]:
    g = generator(252)
    big = randn(g, 2, 3, 6, scale=40.0) + torch.tensor([3000.0, -3000.0]).view(2, 1, 1)   # gaps of tens: some p underflow
    peaked = randn(g, 2, 2, 5)
    peaked[0, 0, 2] = 3000.0                         # one token has all the mass: entropy 0
    return [
        Case("random logits (2, 3, 7), every position counts", {"logits": randn(g, 2, 3, 7, scale=2.0), "mask": torch.ones(2, 3, dtype=torch.long)}),
        Case("a mask with prompt and padding (junk logits there)", {"logits": randn(g, 4, 6, 5, scale=3.0), "mask": spans(6, AFTER_PROMPT)}),
        Case("equal logits: the entropy is log V = log 9", {"logits": torch.full((2, 4, 9), 5.0), "mask": spans(4, [(0, 4), (1, 3)])}),
        Case("large logits (thousands): probabilities underflow to 0", {"logits": big, "mask": torch.ones(2, 3, dtype=torch.long)}),
        Case("bfloat16 logits: compute in float32", {"logits": randn(g, 2, 4, 11, scale=3.0, dtype=torch.bfloat16),
                                                      "mask": spans(4, [(0, 4), (1, 3)])}),
        Case("very negative logits (around -3000), one token with all the mass",
             {"logits": torch.cat([randn(g, 1, 2, 5, scale=50.0, shift=-3000.0), peaked[:1]], 0), "mask": spans(2, [(0, 2), (0, 1)])},
             hidden=True),
        Case("a batch of one, V = 16", {"logits": randn(g, 1, 5, 16, scale=2.0), "mask": spans(5, [(2, 5)])}, hidden=True),
        Case("gradient into the logits: masked positions receive none", {"logits": randn(g, 3, 5, 6, scale=2.0),
                                                                          "mask": spans(5, [(0, 3), (1, 5), (2, 4)])},
             hidden=True, grad=("logits",)),
    ]


def _extra_precision(case: Case, outputs: tuple) -> str | None:
    out = outputs[0]
    if isinstance(out, torch.Tensor) and out.dtype in (torch.float16, torch.bfloat16):
        return "the result is in low precision; compute in at least float32 (`.float()` before the log-softmax)."
    return None


EXERCISES = [
    Exercise("reinforce_loss", build=_reinforce_cases, mistakes=REINFORCE_MISTAKES,
             constants={"baseline": "The baseline differentiated through: it is a constant of the estimator, so detach it "
                                     "(`(rewards - baseline).detach()`); a baseline only changes the variance."},
             hint="loss = -mean over rows of (reward - baseline) * sum of the row's masked log-probs; the weights are detached."),
    Exercise("rloo_advantages", build=_rloo_cases, mistakes=RLOO_MISTAKES,
             hint="A = r - (sum of the group's rewards - r) / (G - 1), one group per row; G < 2 raises ValueError."),
    Exercise("token_entropy", build=_entropy_cases, mistakes=ENTROPY_MISTAKES, extra=_extra_precision,
             hint="H = -sum over V of p * log p with log p = log_softmax(logits) in float32; times the mask."),
]
