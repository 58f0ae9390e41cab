"""Exercises of notebook 04: KL-shaped rewards, masked statistics, GAE and the PPO losses."""
from __future__ import annotations

import torch

from ._core import Case, Exercise, generator, randn, spans
from .mistakes import MISTAKES

RIGHT = [(0, 4), (0, 6), (0, 2)]          # responses from column 0, right padding
AFTER_PROMPT = [(2, 5), (1, 6), (3, 4)]   # responses after a prompt, then padding
LEFT = [(3, 6), (1, 6), (4, 6)]           # left padding, responses reach the end


def _garbage(x: torch.Tensor, mask: torch.Tensor, value: float) -> torch.Tensor:
    """x with a large value written at masked-out positions (what padding may hold)."""
    return torch.where(mask.bool(), x, torch.full_like(x, value))


def _kl_cases() -> list[Case]:
    g = generator(300)

    def case(name, rows, T, kl_coef, hidden=False, scores_scale=2.0, equal=False):
        mask = spans(T, rows)
        lp = -randn(g, len(rows), T).abs() * 2
        ref = lp.clone() if equal else lp + randn(g, len(rows), T, scale=0.5)
        return Case(name, {"scores": randn(g, len(rows), scale=scores_scale), "logprobs": lp,
                           "ref_logprobs": ref, "mask": mask, "kl_coef": kl_coef}, hidden=hidden)

    return [
        case("right-padded responses, kl_coef = 0.1", RIGHT, 6, 0.1),
        case("responses after a prompt, then padding, kl_coef = 0.2", AFTER_PROMPT, 6, 0.2),
        case("policy equals reference: only the scores, at each row's last masked token", AFTER_PROMPT, 6, 0.1, equal=True),
        case("left padding, large scores, kl_coef = 0.05", LEFT, 6, 0.05, hidden=True, scores_scale=10.0),
        case("a batch of one with a single response token", [(2, 3)], 4, 0.1, hidden=True),
        case("kl_coef = 0: only the scores remain", AFTER_PROMPT, 6, 0.0, hidden=True),
    ]


def _mean_cases() -> list[Case]:
    g = generator(301)
    m = spans(5, [(0, 3), (0, 5), (1, 4)])
    return [
        Case("(3, 5) values with padding", {"x": randn(g, 3, 5, scale=2.0, shift=1.0), "mask": m}),
        Case("a mask of ones: the plain mean", {"x": randn(g, 2, 4, shift=3.0), "mask": torch.ones(2, 4, dtype=torch.long)}),
        Case("a 1-D x with a bool mask", {"x": randn(g, 7, shift=-2.0), "mask": torch.tensor([1, 0, 1, 1, 0, 0, 1]).bool()}, hidden=True),
        Case("large values in the padding must not count", {"x": _garbage(randn(g, 3, 5, shift=1.0), m, 1e4), "mask": m.clone()},
             hidden=True),
        Case("gradient: masked positions receive none", {"x": randn(g, 3, 5, shift=1.0), "mask": m.float()}, hidden=True, grad=("x",)),
        Case("an all-zero mask raises ValueError (nothing to average)", {"x": randn(g, 2, 3), "mask": torch.zeros(2, 3, dtype=torch.long)},
             raises="ValueError"),
    ]


def _whiten_cases() -> list[Case]:
    g = generator(302)
    m = spans(6, [(0, 4), (0, 6), (0, 2)])
    left = spans(6, LEFT)
    const = torch.where(left.bool(), torch.tensor(2.0), torch.tensor(50.0))
    return [
        Case("(3, 6) with right padding", {"x": randn(g, 3, 6, scale=3.0, shift=2.0), "mask": m}),
        Case("shift_mean=False: the mean is added back", {"x": randn(g, 3, 6, scale=3.0, shift=2.0), "mask": m.clone(), "shift_mean": False}),
        Case("left padding with large values in the padding", {"x": _garbage(randn(g, 3, 6, scale=2.0), left, 1e3), "mask": left},
             hidden=True),
        Case("a batch of one", {"x": randn(g, 1, 8, scale=0.5), "mask": spans(8, [(1, 7)])}, hidden=True),
        Case("equal values on the mask: whitened to 0 (the 1e-8 keeps it finite)", {"x": const, "mask": left.clone()}, hidden=True),
        Case("gradient: masked positions receive none", {"x": randn(g, 3, 6, scale=2.0), "mask": m.clone()}, hidden=True, grad=("x",)),
    ]


def _gae_cases() -> list[Case]:
    g = generator(303)

    def case(name, rows, T, gamma, lam, hidden=False, garbage=True):
        mask = spans(T, rows)
        r, v = randn(g, len(rows), T), randn(g, len(rows), T)
        if garbage:   # padding holds junk values and rewards; they must not leak in
            r, v = _garbage(r, mask, 5.0), _garbage(v, mask, -7.0)
        return Case(name, {"rewards": r, "values": v, "mask": mask, "gamma": gamma, "lam": lam}, hidden=hidden)

    return [
        case("right-padded rows, gamma = 1, lam = 0.95", RIGHT, 6, 1.0, 0.95),
        case("responses after a prompt, gamma = 0.9, lam = 0.8", AFTER_PROMPT, 6, 0.9, 0.8),
        case("left padding, junk in the padding", LEFT, 6, 1.0, 0.95, hidden=True),
        case("a batch of one", [(1, 7)], 8, 0.99, 0.9, hidden=True),
        case("no padding at all", [(0, 5), (0, 5)], 5, 0.95, 0.5, hidden=True, garbage=False),
    ]


def _away_from_clip(ratio_logs: torch.Tensor, c: float) -> torch.Tensor:
    """Move log-ratios that fall within 1e-3 of a clip boundary (float32 and float64 must agree on clipping)."""
    r = ratio_logs.double().exp()
    near = ((r - (1 + c)).abs() < 1e-3) | ((r - (1 - c)).abs() < 1e-3)
    return torch.where(near, ratio_logs + 0.01, ratio_logs)


def _policy_cases() -> list[Case]:
    g = generator(304)

    def case(name, rows, T, c, hidden=False, grad=False, equal=False, adv_scale=1.0, garbage=False):
        mask = spans(T, rows)
        old = -randn(g, len(rows), T).abs() * 2
        lp = old.clone() if equal else old + _away_from_clip(randn(g, len(rows), T, scale=0.3), c)
        adv = randn(g, len(rows), T, scale=adv_scale)
        if garbage:
            adv = _garbage(adv, mask, 1e3)
        return Case(name, {"logprobs": lp, "old_logprobs": old, "advantages": adv, "mask": mask, "clip_range": c},
                    hidden=hidden, grad=("logprobs",) if grad else ())

    return [
        case("ratios inside and outside the clip range, clip_range = 0.2", RIGHT, 6, 0.2),
        case("policy equals the old policy: loss = -masked mean of A, nothing clipped", AFTER_PROMPT, 6, 0.2, equal=True),
        case("left padding, large advantages in the padding", LEFT, 6, 0.2, hidden=True, garbage=True),
        case("a batch of one, clip_range = 0.1", [(2, 8)], 9, 0.1, hidden=True),
        case("large advantages (about 50)", AFTER_PROMPT, 6, 0.3, hidden=True, adv_scale=50.0),
        case("gradient into logprobs: none at masked positions", RIGHT, 6, 0.2, hidden=True, grad=True),
    ]


def _value_cases() -> list[Case]:
    g = generator(305)

    def case(name, rows, T, c, hidden=False, grad=False, equal=False, garbage=False):
        mask = spans(T, rows)
        old = randn(g, len(rows), T)
        v = old.clone() if equal else old + randn(g, len(rows), T, scale=0.5)
        R = randn(g, len(rows), T)
        if garbage:
            R = _garbage(R, mask, 1e3)
        return Case(name, {"values": v, "old_values": old, "returns": R, "mask": mask, "clip_range": c},
                    hidden=hidden, grad=("values",) if grad else ())

    return [
        case("some values moved more than clip_range = 0.2", RIGHT, 6, 0.2),
        case("values equal old values: half the masked mean squared error", AFTER_PROMPT, 6, 0.2, equal=True),
        case("left padding, large returns in the padding", LEFT, 6, 0.2, hidden=True, garbage=True),
        case("a batch of one, clip_range = 0.1", [(0, 5)], 5, 0.1, hidden=True),
        case("gradient into values: none at masked positions", RIGHT, 6, 0.2, hidden=True, grad=True),
    ]


EXERCISES = [
    Exercise("kl_penalized_rewards", build=_kl_cases, mistakes=MISTAKES["kl_penalized_rewards"],
             hint="-kl_coef * (logprobs - ref_logprobs) on masked tokens, 0 elsewhere, plus the score at each row's last masked token."),
    Exercise("masked_mean", build=_mean_cases, mistakes=MISTAKES["masked_mean"], hint="sum(x * mask) / sum(mask)."),
    Exercise("masked_whiten", build=_whiten_cases, mistakes=MISTAKES["masked_whiten"], only_on_mask="mask",
             hint="(x - mean) / sqrt(var + 1e-8) over masked entries, unbiased variance; shift_mean=False adds the mean back. "
                  "Values outside the mask are not graded (0, or x's own as in TRL)."),
    Exercise("gae_advantages", outputs=("advantages", "returns"), build=_gae_cases, mistakes=MISTAKES["gae_advantages"],
             hint="backwards: delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1}, V = 0 after the last masked token."),
    Exercise("ppo_policy_loss", outputs=("loss", "clip_fraction"), build=_policy_cases, mistakes=MISTAKES["ppo_policy_loss"],
             hint="masked mean of max(-A * ratio, -A * clip(ratio, 1-c, 1+c)); clip fraction: clipped term strictly larger."),
    Exercise("ppo_value_loss", build=_value_cases, mistakes=MISTAKES["ppo_value_loss"],
             hint="0.5 * masked mean of max((v - R)^2, (old + clip(v - old, -c, c) - R)^2)."),
]
