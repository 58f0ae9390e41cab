"""Common mistakes, computed: what each would give on a case's inputs, so a check can name it.

Each function takes the exercise's arguments (floating tensors in float64) and
returns the wrong answer a learner who made that mistake would get; the check
names the first mistake whose answer equals the learner's on a failing case.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._core import Mistake

logsig = F.logsigmoid


def _m(mask):
    return mask.double()


def _mmean(x, mask):
    return (x * _m(mask)).sum() / _m(mask).sum()


def _h(pc, pr, rc, rr):
    return (pc - rc) - (pr - rr)


def _naive_log_sigmoid(x):
    """log(sigmoid(x)) in float32: -inf once sigmoid underflows."""
    return torch.log(torch.sigmoid(x.float())).double()


def _last(mask):
    T = mask.shape[-1]
    return torch.where(mask != 0, torch.arange(T), -1).amax(-1)


def _at(mask, index, values):
    """Zeros shaped like mask, with values[b] at column index[b]."""
    out = torch.zeros(mask.shape, dtype=torch.float64)
    out[torch.arange(mask.shape[0]), index] = values.double()
    return out


def _gae(r, v, mask, gamma, lam, mask_values=True, mask_steps=True, forward=False):
    m = _m(mask)
    v = v * m if mask_values else v
    B, T = r.shape
    adv = torch.zeros(B, T, dtype=torch.float64)
    nxt_a, nxt_v = torch.zeros(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
    steps = range(T) if forward else reversed(range(T))
    for t in steps:
        delta = r[:, t] + gamma * nxt_v - v[:, t]
        nxt_a = delta + gamma * lam * nxt_a
        if mask_steps:
            nxt_a = nxt_a * m[:, t]
        adv[:, t] = nxt_a
        nxt_v = v[:, t]
    return adv * m, (adv + v) * m


def _whiten(x, mask, shift_mean=True, correction=1, use_mask=True, zero_pad=True, power=0.5):
    m = _m(mask) if use_mask else torch.ones_like(x)
    mean = (x * m).sum() / m.sum()
    var = (((x - mean) ** 2) * m).sum() / (m.sum() - correction)
    out = (x - mean) / (var + 1e-8) ** power
    if not shift_mean:
        out = out + mean
    return out * _m(mask) if zero_pad else out


def _ppo(lp, old, adv, mask, c, combine=torch.maximum, sign=-1.0, ratio_fn=None, fraction="strict", use_mask=True):
    ratio = ratio_fn(lp, old, c) if ratio_fn else torch.exp(lp - old)
    a = sign * adv * ratio
    b = sign * adv * torch.clamp(ratio, 1 - c, 1 + c)
    mean = _mmean if use_mask else (lambda x, m: x.mean())
    loss = mean(combine(a, b), mask)
    if fraction == "strict":
        frac = mean((b > a).double(), mask)
    elif fraction == "abs":
        frac = mean(((ratio - 1).abs() > c).double(), mask)
    else:
        frac = mean((b >= a).double(), mask)
    return loss, frac


def _value(v, old, R, mask, c, half=0.5, combine=torch.maximum, clipped=None, use_mask=True):
    vc = clipped(v, old, R, c) if clipped else old + torch.clamp(v - old, -c, c)
    losses = combine((v - R) ** 2, (vc - R) ** 2)
    return half * (_mmean(losses, mask) if use_mask else losses.mean())


def _k(lp, ref, mask, *, inverted=False, half=0.5, masked=True, k3_sign=1.0):
    lr = (lp - ref) if inverted else (ref - lp)
    m = _m(mask) if masked else torch.ones_like(lp)
    k1 = -lr * m
    k2 = half * lr ** 2 * m
    k3 = ((torch.exp(lr) - 1) - k3_sign * lr) * m
    return k1, k2, k3


def _agg(losses, mask, aggregation, clamp=True):
    m = _m(mask)
    if aggregation == "sequence_mean":
        return ((losses * m).sum(1) / (m.sum(1).clamp(min=1) if clamp else m.sum(1))).mean()
    if aggregation == "token_mean":
        return (losses * m).sum() / m.sum()
    if aggregation == "constant":
        return (losses * m).sum() / (m.shape[0] * m.shape[1])
    return (losses * m).sum() / m.shape[0]                       # "sum over tokens, mean over rows"


def _grpo(lp, old, adv, mask, c, aggregation, *, combine=torch.maximum, sign=-1.0, clip="ratio", used=None, clamp=True):
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
    return _agg(losses, mask, used or aggregation, clamp)


AGGREGATION_ADVICE = {
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
    return Mistake(f"used the {label} aggregation", "Check which aggregation was asked for. " + AGGREGATION_ADVICE[used], fn)


def _sft_logps(lg, ids, shift=True):
    """Log-probs of the tokens: (B, T-1) with the shift, (B, T) without it."""
    if shift:
        return torch.log_softmax(lg[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return torch.log_softmax(lg, -1).gather(-1, ids[:, :, None]).squeeze(-1)


def _sft(lg, ids, m, weights=None, shift=True, per_row=False, total=False, sign=-1.0):
    lp = _sft_logps(lg, ids, shift)
    w = _m(m[:, 1:] if shift else m) if weights is None else weights
    if per_row:
        return sign * ((lp * w).sum(-1) / w.sum(-1)).mean()
    return sign * (lp * w).sum() / (1 if total else w.sum())


def _sft_naive(lg, ids, m, where=False):
    """log(softmax(x)) in float32: -inf where a probability underflows (nan once multiplied by a 0 of the mask)."""
    lp = torch.log(torch.softmax(lg[:, :-1].float(), -1)).gather(-1, ids[:, 1:, None]).squeeze(-1).double()
    w = _m(m[:, 1:])
    picked = torch.where(w != 0, lp, torch.zeros_like(lp)) if where else lp * w
    return -picked.sum() / w.sum()


def _pair(lg, ids, m, weights=None, shift=True, mean=False, order="halves", lp=None):
    """concatenated_pair_logps with a mistake: summed (or averaged) rows, split into halves (or not)."""
    lp = _sft_logps(lg, ids, shift) if lp is None else lp
    w = _m(m[:, 1:] if shift else m) if weights is None else weights
    logps = (lp * w).sum(-1)                                          # (2B,)
    if mean:
        logps = logps / w.sum(-1)
    B = logps.shape[0] // 2
    if order == "swapped":
        return logps[B:], logps[:B]
    if order == "interleaved":
        return logps[0::2], logps[1::2]
    return logps[:B], logps[B:]


def _pair_naive(lg, ids, m, where=False):
    """log(softmax(x)) in float32: -inf where a probability underflows (nan once multiplied by a 0 of the mask)."""
    lp = torch.log(torch.softmax(lg[:, :-1].float(), -1)).gather(-1, ids[:, 1:, None]).squeeze(-1).double()
    w = _m(m[:, 1:])
    logps = torch.where(w != 0, lp, torch.zeros_like(lp)).sum(-1) if where else (lp * w).sum(-1)
    B = logps.shape[0] // 2
    return logps[:B], logps[B:]


LOW_PRECISION = ("computed in low precision", "Upcast to float32 first (`.float()`), then compute; bfloat16 keeps only 3 significant digits.")
OVERFLOW = ("log(sigmoid(x)) overflow", "sigmoid underflows to 0 for very negative x and log(0) = -inf: use torch.nn.functional.logsigmoid.")

MISTAKES: dict[str, list[Mistake]] = {
    "log_softmax": [
        Mistake("softmax instead of log-softmax", "Return log-probabilities: x - logsumexp(x) along the last dimension.", lambda x: torch.softmax(x, -1)),
        Mistake("no normalization", "Subtract the log of the sum of exponentials (logsumexp) from every logit.", lambda x: x),
        Mistake("normalizer missing", "After subtracting the maximum, also subtract log(sum(exp(shifted))).", lambda x: x - x.amax(-1, keepdim=True)),
        Mistake("maximum not added back", "If you subtract the maximum inside the log-sum-exp, subtract it from x too: (x - max) - log(sum(exp(x - max))).",
                lambda x: x - (x - x.amax(-1, keepdim=True)).exp().sum(-1, keepdim=True).log()),
        Mistake("sign flipped", "log-softmax is x - logsumexp(x), not logsumexp(x) - x.", lambda x: torch.logsumexp(x, -1, keepdim=True) - x),
        Mistake("normalized over the wrong dimension", "Normalize along the last dimension (dim=-1), the vocabulary.", lambda x: torch.log_softmax(x, 0)),
        Mistake("exp overflow (maximum not subtracted)", "exp(1000) = inf: subtract each row's maximum before exponentiating.",
                lambda x: (x.float() - x.float().exp().sum(-1, keepdim=True).log()).double()),
        Mistake("log of softmax underflows", "softmax underflows to 0 and log(0) = -inf: compute x - max - log(sum(exp(x - max))) instead.",
                lambda x: torch.log(torch.softmax(x.float(), -1)).double()),
        Mistake(*LOW_PRECISION, lambda x: torch.log_softmax(x.bfloat16(), -1).double(), loose=True),
    ],
    "bradley_terry_probability": [
        Mistake("sign flipped", "P(a preferred over b) = sigmoid(r_a - r_b): a larger r_a must give a larger probability.", lambda a, b: torch.sigmoid(b - a)),
        Mistake("sigmoid missing", "Apply the sigmoid to the reward difference to get a probability.", lambda a, b: a - b),
        Mistake("log-probability instead of probability", "Return sigmoid(r_a - r_b), not its log.", lambda a, b: logsig(a - b)),
        Mistake("ratio of rewards instead of exponentials", "Rewards are log-odds, not probabilities: sigmoid(r_a - r_b) = exp(r_a) / (exp(r_a) + exp(r_b)).",
                lambda a, b: a / (a + b)),
        Mistake("tanh instead of sigmoid", "A probability needs the sigmoid, which maps to (0, 1); tanh maps to (-1, 1).", lambda a, b: torch.tanh(a - b)),
        Mistake("sigmoids of each reward compared", "Use the difference of rewards inside one sigmoid.", lambda a, b: torch.sigmoid(a) / (torch.sigmoid(a) + torch.sigmoid(b))),
        Mistake("exp overflow", "exp(r) overflows for large rewards (inf / inf = nan): use torch.sigmoid(r_a - r_b).",
                lambda a, b: (a.float().exp() / (a.float().exp() + b.float().exp())).double()),
    ],
    "token_logprobs": [
        Mistake("no shift", "The logits at t predict the token at t+1: use logits[:, :-1] with input_ids[:, 1:].",
                lambda lg, ids: torch.log_softmax(lg[:, :-1], -1).gather(-1, ids[:, :-1, None]).squeeze(-1)),
        Mistake("no shift (and no cropping)", "The output has T-1 entries: logits[:, :-1] scored against input_ids[:, 1:].",
                lambda lg, ids: torch.log_softmax(lg, -1).gather(-1, ids[:, :, None]).squeeze(-1)),
        Mistake("shifted the wrong way", "Entry t scores token t+1 with the logits at t: logits[:, :-1], input_ids[:, 1:].",
                lambda lg, ids: torch.log_softmax(lg[:, 1:], -1).gather(-1, ids[:, :-1, None]).squeeze(-1)),
        Mistake("raw logits, no log-softmax", "Normalize first: log_softmax over the vocabulary, then gather.",
                lambda lg, ids: lg[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)),
        Mistake("probabilities instead of log-probabilities", "Use log_softmax, not softmax.",
                lambda lg, ids: torch.softmax(lg[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)),
        Mistake("normalized over the wrong dimension", "log_softmax over the vocabulary: dim=-1.",
                lambda lg, ids: torch.log_softmax(lg[:, :-1], 1).gather(-1, ids[:, 1:, None]).squeeze(-1)),
        Mistake(*LOW_PRECISION, lambda lg, ids: torch.log_softmax(lg[:, :-1].bfloat16(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1).double(), loose=True),
    ],
    "sequence_logprob": [
        Mistake("mask not shifted", "token_logps[:, t] scores token t+1, so weight it by completion_mask[:, t+1]: use completion_mask[:, 1:].",
                lambda x, m, average=False: (x * _m(m[:, :-1])).sum(-1) / (_m(m[:, :-1]).sum(-1) if average else 1)),
        Mistake("prompt not masked", "Multiply by the completion mask: prompt and padding tokens must not count.",
                lambda x, m, average=False: x.sum(-1) / (x.shape[-1] if average else 1)),
        Mistake("mean instead of sum", "With average=False return the sum over completion tokens, not their mean.",
                lambda x, m, average=False: (x * _m(m[:, 1:])).sum(-1) / _m(m[:, 1:]).sum(-1)),
        Mistake("sum instead of mean", "With average=True divide by the number of completion tokens.",
                lambda x, m, average=False: (x * _m(m[:, 1:])).sum(-1)),
        Mistake("averaged over all positions", "With average=True divide by the number of completion tokens, not by T-1.",
                lambda x, m, average=False: (x * _m(m[:, 1:])).sum(-1) / x.shape[-1]),
    ],
    "sft_loss": [
        Mistake("no shift", "The logits at t predict the token at t+1: score logits[:, :-1] against input_ids[:, 1:], "
                            "weighted by completion_mask[:, 1:].", lambda lg, ids, m: _sft(lg, ids, m, shift=False)),
        Mistake("mask not shifted", "The prediction at t is for token t+1: weight it by that token's mask, completion_mask[:, 1:].",
                lambda lg, ids, m: _sft(lg, ids, m, weights=_m(m[:, :-1]))),
        Mistake("prompt tokens counted", "SFT trains on the completion only: weight every token by completion_mask[:, 1:] "
                                         "(prompt and padding get 0) and divide by the number of completion tokens.",
                lambda lg, ids, m: _sft(lg, ids, m, weights=torch.ones(m.shape[0], m.shape[1] - 1, dtype=torch.float64))),
        Mistake("padding counted", "The padding after a completion must not count: use completion_mask[:, 1:] itself, "
                                   "not 'every position after the prompt'.",
                lambda lg, ids, m: _sft(lg, ids, m, weights=(_m(m).cumsum(-1) > 0).double()[:, 1:])),
        Mistake("mean of per-sequence means", "Average over all completion tokens of the batch at once (sum of their "
                                              "-log p / their count), not row by row: a long completion weighs more.",
                lambda lg, ids, m: _sft(lg, ids, m, per_row=True)),
        Mistake("sum instead of mean", "Divide the summed -log p by the number of completion tokens.",
                lambda lg, ids, m: _sft(lg, ids, m, total=True)),
        Mistake("sign flipped", "The loss is the negative log-likelihood: minus the mean log-probability (it is >= 0).",
                lambda lg, ids, m: _sft(lg, ids, m, sign=1.0)),
        Mistake("overflow on large logits", "log(softmax(x)) (or exp(x) / sum exp(x)) breaks for logits in the hundreds "
                                            "(0 * -inf = nan): use torch.log_softmax, or the logit minus logsumexp.",
                lambda lg, ids, m: _sft_naive(lg, ids, m)),
        Mistake("overflow on large logits (log of 0)", "softmax underflows to 0 for logits in the hundreds and log(0) = -inf: "
                                                       "use torch.log_softmax, or the logit minus logsumexp.",
                lambda lg, ids, m: _sft_naive(lg, ids, m, where=True)),
        Mistake(*LOW_PRECISION, lambda lg, ids, m: -(torch.log_softmax(lg[:, :-1].bfloat16(), -1).gather(-1, ids[:, 1:, None])
                                                     .squeeze(-1).double() * _m(m[:, 1:])).sum() / _m(m[:, 1:]).sum(), loose=True),
    ],
    "concatenated_pair_logps": [
        Mistake("chosen and rejected halves swapped", "Rows 0..B-1 are the chosen completions and rows B..2B-1 the rejected ones: "
                                                      "return (logps[:B], logps[B:]).", lambda lg, ids, m: _pair(lg, ids, m, order="swapped"), output=None),
        Mistake("halves taken as alternating rows", "The batch is two halves, not interleaved pairs: chosen = logps[:B], rejected = logps[B:] "
                                                    "(not logps[0::2], logps[1::2]).", lambda lg, ids, m: _pair(lg, ids, m, order="interleaved"), output=None),
        Mistake("no shift", "The logits at t predict the token at t+1: score logits[:, :-1] against input_ids[:, 1:], "
                            "weighted by completion_mask[:, 1:].", lambda lg, ids, m: _pair(lg, ids, m, shift=False), output=None),
        Mistake("mask not shifted", "The prediction at t is for token t+1: weight it by that token's mask, completion_mask[:, 1:] "
                                    "(completion_mask[:, :-1] drops the last completion token and counts the last prompt token).",
                lambda lg, ids, m: _pair(lg, ids, m, weights=_m(m[:, :-1])), output=None),
        Mistake("prompt tokens counted", "A sequence log-prob is over the completion only: weight every token by completion_mask[:, 1:] "
                                         "(prompt and padding get 0).",
                lambda lg, ids, m: _pair(lg, ids, m, weights=torch.ones(m.shape[0], m.shape[1] - 1, dtype=torch.float64)), output=None),
        Mistake("padding counted", "The right padding after a completion must not count: the half that is shorter is padded to the "
                                   "other's width, so use completion_mask[:, 1:] itself, not 'every position after the prompt'.",
                lambda lg, ids, m: _pair(lg, ids, m, weights=(_m(m).cumsum(-1) > 0).double()[:, 1:]), output=None),
        Mistake("mean instead of sum", "DPO's sequence log-prob is the SUM over completion tokens; a mean is SimPO's average, "
                                       "not what the DPO loss takes.", lambda lg, ids, m: _pair(lg, ids, m, mean=True), output=None),
        Mistake("overflow on large logits", "log(softmax(x)) (or exp(x) / sum exp(x)) breaks for logits in the hundreds "
                                            "(0 * -inf = nan): use torch.log_softmax, or the logit minus logsumexp.",
                lambda lg, ids, m: _pair_naive(lg, ids, m), output=None),
        Mistake("overflow on large logits (log of 0)", "softmax underflows to 0 for logits in the hundreds and log(0) = -inf: "
                                                       "use torch.log_softmax, or the logit minus logsumexp.",
                lambda lg, ids, m: _pair_naive(lg, ids, m, where=True), output=None),
        Mistake(*LOW_PRECISION, lambda lg, ids, m: _pair(lg, ids, m, lp=torch.log_softmax(lg[:, :-1].bfloat16(), -1)
                                                                 .gather(-1, ids[:, 1:, None]).squeeze(-1).double()),
                output=None, loose=True),
    ],
    "last_token_index": [
        Mistake("right padding only", "mask.sum(-1) - 1 is wrong for left padding: find the position of the last 1.", lambda m: m.long().sum(-1) - 1),
        Mistake("count instead of index", "Positions start at 0: the last real token of a full row of T is T-1.", lambda m: m.long().sum(-1)),
        Mistake("first real token", "You found the first 1 in each row; the reward is read at the last one.", lambda m: (m != 0).long().argmax(-1)),
        Mistake("flipped index not converted back", "After flipping, position p in the flipped row is T-1-p in the original row.", lambda m: (m != 0).long().flip(-1).argmax(-1)),
    ],
    "pairwise_reward_loss": [
        Mistake("sign flipped", "The loss is -log sigmoid(r_chosen - r_rejected): chosen first.", lambda c, r, mg=None: -logsig(r - c - (0 if mg is None else mg)).mean()),
        Mistake("minus sign missing", "A loss to minimize is -log sigmoid(...), which is >= 0.", lambda c, r, mg=None: logsig(c - r - (0 if mg is None else mg)).mean()),
        Mistake(*OVERFLOW, lambda c, r, mg=None: -_naive_log_sigmoid(c - r - (0 if mg is None else mg)).mean()),
        Mistake("margin added instead of subtracted", "The margin asks for a larger gap: sigmoid(r_c - r_r - margin).", lambda c, r, mg=None: -logsig(c - r + (0 if mg is None else mg)).mean()),
        Mistake("margin ignored", "Subtract the margin from the reward gap when it is given.", lambda c, r, mg=None: -logsig(c - r).mean()),
        Mistake("sum instead of mean", "Average over the batch (mean), do not sum.", lambda c, r, mg=None: -logsig(c - r - (0 if mg is None else mg)).sum()),
    ],
    "best_of_n_kl": [
        Mistake("the (n-1)/n term missing", "The KL is log n - (n-1)/n.", lambda n: math.log(n)),
        Mistake("sign flipped", "The KL is log n - (n-1)/n (it is >= 0).", lambda n: (n - 1) / n - math.log(n)),
        Mistake("log base 2", "Use the natural log (math.log): KL is in nats.", lambda n: math.log2(n) - (n - 1) / n),
        Mistake("plus instead of minus", "The KL is log n minus (n-1)/n.", lambda n: math.log(n) + (n - 1) / n),
        Mistake("(n-1)/n inverted", "The second term is (n-1)/n, which is below 1.", lambda n: math.log(n) - n / (n - 1)),
        Mistake("1/n instead of (n-1)/n", "The second term is (n-1)/n.", lambda n: math.log(n) - 1 / n),
    ],
    "kl_penalized_rewards": [
        Mistake("KL flipped", "The penalty is -kl_coef * (logprobs - ref_logprobs): the policy's log-prob first.",
                lambda s, lp, ref, m, k: kl_coef_term(lp, ref, m, -k) + _at(m, _last(m), s)),
        Mistake("score on the wrong token: the last column", "Add the score at each row's last masked token, not at column T-1.",
                lambda s, lp, ref, m, k: kl_coef_term(lp, ref, m, k) + _at(m, torch.full((m.shape[0],), m.shape[1] - 1), s)),
        Mistake("score on the wrong token: mask.sum() - 1", "mask.sum(-1) - 1 assumes the mask starts at column 0: find the last 1 itself.",
                lambda s, lp, ref, m, k: kl_coef_term(lp, ref, m, k) + _at(m, m.long().sum(-1) - 1, s)),
        Mistake("score on the wrong token: the first masked token", "The score belongs to the last masked token (the EOS).",
                lambda s, lp, ref, m, k: kl_coef_term(lp, ref, m, k) + _at(m, (m != 0).long().argmax(-1), s)),
        Mistake("score not added", "Add each row's score at its last masked token.", lambda s, lp, ref, m, k: kl_coef_term(lp, ref, m, k)),
        Mistake("KL direction flipped (reverse-KL estimator)", "The per-token penalty is kl_coef * (logprobs - ref_logprobs), the log-ratio on the policy's own samples.",
                lambda s, lp, ref, m, k: -k * torch.exp(ref - lp) * (ref - lp) * _m(m) + _at(m, _last(m), s)),
        Mistake("score replaces the penalty", "Add the score to the last token's penalty; do not overwrite it.",
                lambda s, lp, ref, m, k: kl_coef_term(lp, ref, m, k) * (1 - _at(m, _last(m), torch.ones(m.shape[0]))) + _at(m, _last(m), s)),
        Mistake("score added to every masked token", "The score is added once, at the last masked token.",
                lambda s, lp, ref, m, k: kl_coef_term(lp, ref, m, k) + s[:, None] * _m(m)),
        Mistake("KL not masked", "Multiply the penalty by the mask: padding gets no reward.",
                lambda s, lp, ref, m, k: -k * (lp - ref) + _at(m, _last(m), s)),
        Mistake("kl_coef missing", "Multiply the log-ratio by kl_coef.", lambda s, lp, ref, m, k: kl_coef_term(lp, ref, m, 1.0) + _at(m, _last(m), s)),
    ],
    "masked_mean": [
        Mistake("mask ignored", "Average only where the mask is 1: sum(x * mask) / sum(mask).", lambda x, m: x.mean()),
        Mistake("divided by every entry", "Divide by the number of masked entries, sum(mask), not by x.numel().", lambda x, m: (x * _m(m)).sum() / x.numel()),
        Mistake("sum instead of mean", "Divide by sum(mask).", lambda x, m: (x * _m(m)).sum()),
        Mistake("mean of row means", "Average all masked entries together, not row by row.", lambda x, m: ((x * _m(m)).sum(-1) / _m(m).sum(-1)).mean()),
    ],
    "masked_whiten": [
        Mistake("biased variance", "Use the unbiased variance: divide by (number of masked entries - 1).", lambda x, m, s=True: _whiten(x, m, s, correction=0)),
        Mistake("mask ignored in mean and variance", "Compute the mean and the variance over masked entries only.", lambda x, m, s=True: _whiten(x, m, s, use_mask=False)),
        Mistake("shift_mean ignored", "With shift_mean=False add the mean back after scaling.", lambda x, m, s=True: _whiten(x, m, True)),
        Mistake("divided by the variance", "Divide by sqrt(var + 1e-8), the standard deviation.", lambda x, m, s=True: _whiten(x, m, s, power=1.0)),
    ],
    "gae_advantages": [
        Mistake("bootstrapping from padding", "After a row's last masked token, V_{t+1} = 0: do not read values from padding.",
                lambda r, v, m, g, lam: _gae(r, v, m, g, lam, mask_values=False), output=None),
        Mistake("GAE leaking past the mask", "Reset the recursion outside the mask: rewards and values in padding must not flow back.",
                lambda r, v, m, g, lam: _gae(r, v, m, g, lam, mask_values=False, mask_steps=False), output=None),
        Mistake("gamma and lam swapped", "delta_t = r_t + gamma V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}.",
                lambda r, v, m, g, lam: _gae(r, v, m, lam, g), output=None),
        Mistake("lam missing", "Multiply by gamma * lam in the recursion, not gamma alone.", lambda r, v, m, g, lam: _gae(r, v, m, g, 1.0), output=None),
        Mistake("recursion run forwards", "GAE runs backwards in time: from the last step to the first.", lambda r, v, m, g, lam: _gae(r, v, m, g, lam, forward=True), output=None),
        Mistake("returns without the values", "returns = advantages + values.", lambda r, v, m, g, lam: _gae(r, v, m, g, lam)[0], output=1),
        Mistake("not zero outside the mask", "Multiply advantages and returns by the mask.",
                lambda r, v, m, g, lam: tuple(x for x in _gae(r, v * _m(m), torch.ones_like(r), g, lam)), output=None),
    ],
    "ppo_policy_loss": [
        Mistake("min instead of max", "The loss is the max of the two negated terms (the pessimistic bound).", lambda *a: _ppo(*a, combine=torch.minimum)[0]),
        Mistake("minus sign missing", "Minimizing the loss must raise A * ratio: negate it, -A * ratio.", lambda *a: _ppo(*a, sign=1.0)[0]),
        Mistake("ratio inverted", "ratio = exp(logprobs - old_logprobs).", lambda *a: _ppo(*a, ratio_fn=lambda lp, old, c: torch.exp(old - lp))[0]),
        Mistake("clip on the wrong term: the log-ratio", "Clip the ratio to [1-c, 1+c], not the log-ratio to [-c, c].",
                lambda lp, old, adv, m, c: _mmean(torch.maximum(-adv * torch.exp(lp - old), -adv * torch.exp(torch.clamp(lp - old, -c, c))), m)),
        Mistake("clip on the wrong term: the advantage", "Clip the ratio, not the advantage.",
                lambda lp, old, adv, m, c: _mmean(torch.maximum(-adv * torch.exp(lp - old), -torch.clamp(adv, -c, c) * torch.exp(lp - old)), m)),
        Mistake("only the clipped term", "Take the max of the unclipped and the clipped terms.",
                lambda lp, old, adv, m, c: _mmean(-adv * torch.clamp(torch.exp(lp - old), 1 - c, 1 + c), m)),
        Mistake("no clipping", "Take the max of -A * ratio and -A * clip(ratio, 1-c, 1+c).", lambda lp, old, adv, m, c: _mmean(-adv * torch.exp(lp - old), m)),
        Mistake("mask ignored", "Use the masked mean: padding must not count.", lambda *a: _ppo(*a, use_mask=False)[0]),
        Mistake("clip fraction counts every ratio outside the range", "Count a token only where the clipped term is strictly larger.",
                lambda *a: _ppo(*a, fraction="abs")[1], output=1),
        Mistake(">= instead of > in the clip fraction", "Count a token only where the clipped term is strictly larger (>).",
                lambda *a: _ppo(*a, fraction="ge")[1], output=1),
        Mistake("clip fraction with the mask ignored", "Take the masked mean of the indicator.", lambda *a: _ppo(*a, use_mask=False)[1], output=1),
    ],
    "ppo_value_loss": [
        Mistake("missing 0.5", "The value loss is 0.5 * masked mean of the max.", lambda *a: _value(*a, half=1.0)),
        Mistake("min instead of max", "Take the max of the clipped and unclipped squared errors.", lambda *a: _value(*a, combine=torch.minimum)),
        Mistake("clip on the wrong term: old_values not added back", "The clipped value is old_values + clip(values - old_values, -c, c).",
                lambda *a: _value(*a, clipped=lambda v, old, R, c: torch.clamp(v - old, -c, c))),
        Mistake("no clipping", "Take the max with the clipped value's squared error.", lambda v, old, R, m, c: 0.5 * _mmean((v - R) ** 2, m)),
        Mistake("clip on the wrong term: around the returns", "Clip the new value around old_values: old + clip(v - old, -c, c).",
                lambda *a: _value(*a, clipped=lambda v, old, R, c: R + torch.clamp(v - R, -c, c))),
        Mistake("mask ignored", "Use the masked mean: padding must not count.", lambda *a: _value(*a, use_mask=False)),
    ],
    "dpo_logits": [
        Mistake("sign flipped", "h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected).", lambda pc, pr, rc, rr: -_h(pc, pr, rc, rr)),
        Mistake("reference missing", "Subtract the reference log-probs: DPO compares log-ratios log(pi / pi_ref).", lambda pc, pr, rc, rr: pc - pr),
        Mistake("reference added instead of subtracted", "Each log-ratio is policy - reference.", lambda pc, pr, rc, rr: (pc + rc) - (pr + rr)),
        Mistake("ratios instead of log-ratio differences", "log(pi / pi_ref) = log pi - log pi_ref: subtract log-probs, do not divide them.",
                lambda pc, pr, rc, rr: pc / rc - pr / rr),
    ],
    "dpo_loss": [
        Mistake("beta misplaced (outside the log-sigmoid)", "beta multiplies h inside: -log sigmoid(beta * h).", lambda pc, pr, rc, rr, b: -(b * logsig(_h(pc, pr, rc, rr))).mean()),
        Mistake("beta divides instead of multiplying", "Use beta * h.", lambda pc, pr, rc, rr, b: -logsig(_h(pc, pr, rc, rr) / b).mean()),
        Mistake("beta missing", "Scale h by beta: -log sigmoid(beta * h).", lambda pc, pr, rc, rr, b: -logsig(_h(pc, pr, rc, rr)).mean()),
        Mistake("beta on the chosen side only", "beta multiplies the whole difference: beta * (chosen log-ratio - rejected log-ratio).",
                lambda pc, pr, rc, rr, b: -logsig(b * (pc - rc) - (pr - rr)).mean()),
        Mistake("sigmoid instead of log-sigmoid", "The loss is the negative log-likelihood: -log sigmoid(beta * h).",
                lambda pc, pr, rc, rr, b: -torch.sigmoid(b * _h(pc, pr, rc, rr)).mean()),
        Mistake("sign flipped", "The loss is -log sigmoid(+beta * h), with h = chosen log-ratio minus rejected log-ratio.", lambda pc, pr, rc, rr, b: -logsig(-b * _h(pc, pr, rc, rr)).mean()),
        Mistake("reference missing", "Subtract the reference log-probs: h = (pc - rc) - (pr - rr).", lambda pc, pr, rc, rr, b: -logsig(b * (pc - pr)).mean()),
        Mistake(*OVERFLOW, lambda pc, pr, rc, rr, b: -_naive_log_sigmoid(b * _h(pc, pr, rc, rr)).mean()),
        Mistake("sum instead of mean", "Average the loss over the batch.", lambda pc, pr, rc, rr, b: -logsig(b * _h(pc, pr, rc, rr)).sum()),
        Mistake("implicit rewards without beta", "The implicit reward is beta * (policy - reference) log-prob.", lambda pc, pr, rc, rr, b: pc - rc, output=1),
        Mistake("implicit rewards without the reference", "The implicit reward is beta * (policy - reference) log-prob.", lambda pc, pr, rc, rr, b: b * pc, output=1),
        Mistake("chosen and rejected rewards swapped", "chosen_rewards come from the chosen completions.", lambda pc, pr, rc, rr, b: b * (pr - rr), output=1),
        Mistake("implicit rewards without beta", "The implicit reward is beta * (policy - reference) log-prob.", lambda pc, pr, rc, rr, b: pr - rr, output=2),
        Mistake("implicit rewards without the reference", "The implicit reward is beta * (policy - reference) log-prob.", lambda pc, pr, rc, rr, b: b * pr, output=2),
        Mistake("chosen and rejected rewards swapped", "rejected_rewards come from the rejected completions.", lambda pc, pr, rc, rr, b: b * (pc - rc), output=2),
    ],
    "dpo_preference_probability": [
        Mistake("sign flipped", "P(chosen preferred) = sigmoid(+beta * h).", lambda pc, pr, rc, rr, b: torch.sigmoid(-b * _h(pc, pr, rc, rr))),
        Mistake("beta missing", "Scale h by beta before the sigmoid.", lambda pc, pr, rc, rr, b: torch.sigmoid(_h(pc, pr, rc, rr))),
        Mistake("beta misplaced (outside the sigmoid)", "beta multiplies h inside: sigmoid(beta * h).", lambda pc, pr, rc, rr, b: b * torch.sigmoid(_h(pc, pr, rc, rr))),
        Mistake("reference missing", "h compares log-ratios: (pc - rc) - (pr - rr).", lambda pc, pr, rc, rr, b: torch.sigmoid(b * (pc - pr))),
        Mistake("log-probability instead of probability", "Return sigmoid(beta * h), not its log.", lambda pc, pr, rc, rr, b: logsig(b * _h(pc, pr, rc, rr))),
        Mistake("logits, not a probability", "Apply the sigmoid to beta * h.", lambda pc, pr, rc, rr, b: b * _h(pc, pr, rc, rr)),
    ],
    "dpo_gradient_weight": [
        Mistake("sign flipped (that is the preference probability)", "The weight is sigmoid(rejected_reward - chosen_reward) = sigmoid(-beta * h).",
                lambda pc, pr, rc, rr, b: torch.sigmoid(b * _h(pc, pr, rc, rr))),
        Mistake("beta missing", "The implicit rewards carry beta: sigmoid(-beta * h).", lambda pc, pr, rc, rr, b: torch.sigmoid(-_h(pc, pr, rc, rr))),
        Mistake("beta included in the weight", "The weight is the sigmoid alone; beta multiplies the gradient separately.",
                lambda pc, pr, rc, rr, b: b * torch.sigmoid(-b * _h(pc, pr, rc, rr))),
        Mistake("reference missing", "The implicit rewards are beta * (policy - reference) log-probs.", lambda pc, pr, rc, rr, b: torch.sigmoid(-b * (pc - pr))),
    ],
    "cdpo_loss": [
        Mistake("label smoothing swapped", "(1 - e) weighs log sigmoid(beta h), e weighs log sigmoid(-beta h).",
                lambda pc, pr, rc, rr, b, e: (-e * logsig(b * _h(pc, pr, rc, rr)) - (1 - e) * logsig(-b * _h(pc, pr, rc, rr))).mean()),
        Mistake("label smoothing ignored", "Mix in e * (-log sigmoid(-beta h)).", lambda pc, pr, rc, rr, b, e: -logsig(b * _h(pc, pr, rc, rr)).mean()),
        Mistake("second term with the wrong sign", "Both terms are negative log-sigmoids: -(1-e) log s(bh) - e log s(-bh).",
                lambda pc, pr, rc, rr, b, e: (-(1 - e) * logsig(b * _h(pc, pr, rc, rr)) + e * logsig(-b * _h(pc, pr, rc, rr))).mean()),
        Mistake("robust DPO instead of conservative DPO", "cDPO adds e * (-log sigmoid(-beta h)) and does not divide by 1 - 2e (that is robust DPO).",
                lambda pc, pr, rc, rr, b, e: ((-(1 - e) * logsig(b * _h(pc, pr, rc, rr)) + e * logsig(-b * _h(pc, pr, rc, rr))) / (1 - 2 * e)).mean()),
        Mistake("beta misplaced (outside the log-sigmoid)", "beta multiplies h inside both log-sigmoids.",
                lambda pc, pr, rc, rr, b, e: (-(1 - e) * b * logsig(_h(pc, pr, rc, rr)) - e * b * logsig(-_h(pc, pr, rc, rr))).mean()),
        Mistake(*OVERFLOW, lambda pc, pr, rc, rr, b, e: (-(1 - e) * _naive_log_sigmoid(b * _h(pc, pr, rc, rr)) - e * _naive_log_sigmoid(-b * _h(pc, pr, rc, rr))).mean()),
    ],
    "ipo_loss": [
        Mistake("missing 2 in the target", "The target is 1 / (2 * tau).", lambda pc, pr, rc, rr, t: ((_h(pc, pr, rc, rr) - 1 / t) ** 2).mean()),
        Mistake("target tau instead of 1/(2 tau)", "The target is 1 / (2 * tau).", lambda pc, pr, rc, rr, t: ((_h(pc, pr, rc, rr) - t) ** 2).mean()),
        Mistake("target tau/2 instead of 1/(2 tau)", "1 / (2 * tau) is 1 / (2 * tau), not tau / 2.", lambda pc, pr, rc, rr, t: ((_h(pc, pr, rc, rr) - t / 2) ** 2).mean()),
        Mistake("target sign flipped", "(h - 1/(2 tau))^2: subtract the target.", lambda pc, pr, rc, rr, t: ((_h(pc, pr, rc, rr) + 1 / (2 * t)) ** 2).mean()),
        Mistake("square missing", "Square the gap to the target.", lambda pc, pr, rc, rr, t: (_h(pc, pr, rc, rr) - 1 / (2 * t)).mean()),
        Mistake("absolute error instead of square", "IPO regresses h onto its target with a squared error.",
                lambda pc, pr, rc, rr, t: (_h(pc, pr, rc, rr) - 1 / (2 * t)).abs().mean()),
        Mistake("tau multiplies h (DPO-style beta)", "tau only sets the target: (h - 1/(2 tau))^2, with h unscaled.",
                lambda pc, pr, rc, rr, t: ((t * _h(pc, pr, rc, rr) - 0.5) ** 2).mean()),
        Mistake("reference missing", "h = (pc - rc) - (pr - rr).", lambda pc, pr, rc, rr, t: ((pc - pr - 1 / (2 * t)) ** 2).mean()),
        Mistake("sum instead of mean", "Average over the batch.", lambda pc, pr, rc, rr, t: ((_h(pc, pr, rc, rr) - 1 / (2 * t)) ** 2).sum()),
    ],
    "simpo_loss": [
        Mistake("gamma inside beta", "The margin sits outside: beta * (avg_c - avg_r) - gamma.", lambda c, r, b, g: -logsig(b * (c - r - g)).mean()),
        Mistake("gamma added instead of subtracted", "Subtract the target margin gamma.", lambda c, r, b, g: -logsig(b * (c - r) + g).mean()),
        Mistake("gamma ignored", "Subtract the target margin gamma.", lambda c, r, b, g: -logsig(b * (c - r)).mean()),
        Mistake("sign flipped", "Chosen first: beta * (avg_c - avg_r) - gamma.", lambda c, r, b, g: -logsig(b * (r - c) - g).mean()),
        Mistake(*OVERFLOW, lambda c, r, b, g: -_naive_log_sigmoid(b * (c - r) - g).mean()),
    ],
    "group_relative_advantages": [
        Mistake("biased std", "Use the unbiased std: r.std(dim=1, keepdim=True) (correction=1).",
                lambda r, eps=1e-6: (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True, correction=0) + eps)),
        Mistake("normalized over the whole batch", "Normalize within each group (each row), not over all prompts.",
                lambda r, eps=1e-6: (r - r.mean()) / (r.std() + eps)),
        Mistake("normalized over the wrong dimension", "Groups are rows: take mean and std along dim=1.",
                lambda r, eps=1e-6: (r - r.mean(0, keepdim=True)) / (r.std(0, keepdim=True) + eps)),
        Mistake("std missing", "Divide by the group's std + eps.", lambda r, eps=1e-6: r - r.mean(1, keepdim=True)),
        Mistake("eps missing", "Add eps to the std: a group of equal rewards has std 0.", lambda r, eps=1e-6: (r - r.mean(1, keepdim=True)) / r.std(1, keepdim=True)),
        Mistake("divided by the variance", "Divide by the std, not the variance.", lambda r, eps=1e-6: (r - r.mean(1, keepdim=True)) / (r.var(1, keepdim=True) + eps)),
    ],
    "kl_estimators": [
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
    ],
    "grpo_policy_loss": [
        *(_aggregation_mistake(u) for u in ("sequence_mean", "token_mean", "constant", "sum_rows")),
        Mistake("min instead of max", "The loss is the max of the two negated terms (the pessimistic bound).",
                lambda *a: _grpo(*a, combine=torch.minimum)),
        Mistake("minus sign missing", "Minimizing the loss must raise A * ratio: negate it, -A * ratio.",
                lambda *a: _grpo(*a, sign=1.0)),
        Mistake("clip on the wrong term: the log-ratio", "Clip the ratio to [1-c, 1+c], not the log-ratio to [-c, c].",
                lambda *a: _grpo(*a, clip="log")),
        Mistake("no clipping", "Take the max of -A * ratio and -A * clip(ratio, 1-c, 1+c).", lambda *a: _grpo(*a, clip="none")),
        Mistake("an all-masked row divides 0 by 0", "In sequence_mean, clamp each row's token count at 1 "
                "(mask.sum(1).clamp(min=1)), as TRL does: a row with no completion tokens then contributes 0, not NaN.",
                lambda *a: _grpo(*a, clamp=False)),
    ],
}


def kl_coef_term(lp, ref, mask, k):
    """-k * (lp - ref) on masked tokens (the correct penalty for k = kl_coef)."""
    return -k * (lp - ref) * _m(mask)


__all__: list[str] = []
