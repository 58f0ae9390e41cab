"""Best-of-n sampling: draw n completions, keep the one a judge (the reward model, or the gold) scores highest.

Notebook 02 uses it as the simplest optimizer of a learned reward, and shows
over-optimization: the proxy keeps rising with n while the gold reward it buys
flattens. Notebook 05 puts its points on the frontier (``alignlab.frontier``).

>>> config = BestOfNConfig.for_track(track)
>>> pool = best_of_n_pool(policy, tokenizer, prompts, reward_model, gold, config)   # (P, N) proxy and gold
>>> curve = best_of_n_curve(pool["proxy"], pool["gold"], ns=[1, 2, 4, 8])             # expected best-of-n, each n
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

from . import report
from .reward_model import score_batch
from .rewards import gold_scores
from .rollout import sample_groups


@dataclass
class BestOfNConfig:
    """Sizes of the best-of-n experiment: n_max samples per prompt, scored by proxy and gold."""

    n_max: int = 64                  # samples per prompt; the curve covers every n from 1 to n_max
    n_prompts: int = 64              # held-out prompts
    max_new_tokens: int = 24         # completion length limit
    temperature: float = 1.0         # sampling temperature of the policy (1: the policy itself, for the KL formula)
    prompts_per_call: int = 16       # prompts per sampling call (each expanded n_max times; the KV cache grows
                                     # with prompts_per_call * n_max: GPT-2 124M holds 4.2 GB for 1,024 x 56 tokens)
    seed: int = 0                    # sampling seed

    @classmethod
    def for_track(cls, track, **overrides) -> "BestOfNConfig":
        """Best-of-n sizes for ``track`` (CPU, GPU, grading); ``overrides`` replace any field."""
        cfg = cls(
            n_max=track.pick(cpu=64, gpu=256, grading=4),
            n_prompts=track.pick(cpu=32, gpu=128, grading=4),
            max_new_tokens=track.pick(cpu=24, gpu=48, grading=8),
            prompts_per_call=track.pick(cpu=16, gpu=4, grading=4),    # gpu: 4 x 256 = 1,024 sequences per call
        )
        return replace(cfg, **overrides)


@torch.no_grad()
def best_of_n_pool(policy, tokenizer, prompts: Sequence[dict], reward_model, gold, config: BestOfNConfig,
                   progress: bool = True):
    """Sample ``config.n_max`` completions for each prompt and score each with the proxy and the gold reward.

    prompts: rows of ``alignlab.pairs.load_prompts`` (``prompt_ids``, ``prompt``); the first ``config.n_prompts``.
    Returns a dict: ``proxy`` (P, N) learned rewards, ``gold`` (P, N) gold rewards of prompt + completion,
    ``completions`` (P lists of N str), ``prompts`` (P str).
    """
    prompts = list(prompts)[: config.n_prompts]
    device = next(policy.parameters()).device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    proxy, golds, texts = [], [], []
    chunks = sample_groups(policy, [row["prompt_ids"] for row in prompts], config.n_max, config.max_new_tokens,
                           temperature=config.temperature, generator=generator, tokenizer=tokenizer,
                           prompts_per_call=config.prompts_per_call)
    calls = math.ceil(len(prompts) / config.prompts_per_call)
    for part in tqdm(chunks, total=calls, desc=f"sampling {config.n_max} completions per prompt",
                     disable=not progress):
        ro, C = part.rollout, part.count
        r = score_batch(reward_model, ro.input_ids, ro.attention_mask)                          # (C * N,)
        _, g = gold_scores(gold, tokenizer, part.prompt_ids, ro.completion_ids)                # (C * N,)
        proxy.append(r.view(C, config.n_max))
        golds.append(g.view(C, config.n_max))
        texts += [ro.texts[i * config.n_max:(i + 1) * config.n_max] for i in range(C)]
    return {"proxy": torch.cat(proxy), "gold": torch.cat(golds), "completions": texts,
            "prompts": [row["prompt"] for row in prompts]}


def best_of_n_weights(N: int, n: int) -> torch.Tensor:
    """(N,) probability that the i-th smallest of N scores (ascending) is the best of a random n-subset.

    w_i = C(i-1, n-1) / C(N, n): an unbiased best-of-n estimate from one pool of N >= n samples.
    """
    total = math.comb(N, n)
    return torch.tensor([math.comb(i - 1, n - 1) / total for i in range(1, N + 1)], dtype=torch.float64)


def best_of_n_curve(proxy: torch.Tensor, gold: torch.Tensor, ns: Sequence[int], select_by: str = "proxy"):
    """Expected proxy and gold reward of best-of-n (selected by ``select_by``: "proxy" or "gold") for each n.

    proxy, gold: (P, N) pools. Returns a dict of (len(ns),) tensors: ``n``, ``proxy``, ``gold``, ``gold_se``
    (standard error of the gold mean over prompts).
    """
    key = proxy if select_by == "proxy" else gold
    order = key.double().argsort(dim=1)                      # (P, N) ascending
    p_sorted = proxy.double().gather(1, order)
    g_sorted = gold.double().gather(1, order)
    N = proxy.shape[1]
    out = {"n": torch.tensor(list(ns)), "proxy": [], "gold": [], "gold_se": []}
    for n in ns:
        w = best_of_n_weights(N, n)                          # (N,)
        per_prompt_gold = g_sorted @ w                       # (P,)
        out["proxy"].append(float((p_sorted @ w).mean()))
        out["gold"].append(float(per_prompt_gold.mean()))
        out["gold_se"].append(float(per_prompt_gold.std() / math.sqrt(max(len(per_prompt_gold), 1))))
    return {k: torch.as_tensor(v, dtype=torch.float64) if k != "n" else v for k, v in out.items()}


def fit_gao(kl: Sequence[float], gold: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of Gao et al.'s best-of-n law, gold(d) - gold(0) = d (a - b d) with d = sqrt(KL).

    Returns (a, b). With b > 0 the fitted gold peaks at d = a / (2 b), i.e. KL = (a / (2 b))^2.
    """
    d = torch.as_tensor(list(kl), dtype=torch.float64).sqrt()                 # (K,)
    y = torch.as_tensor(list(gold), dtype=torch.float64)
    y = y - y[0]
    X = torch.stack([d, -d * d], dim=1)                                       # (K, 2)
    a, b = torch.linalg.lstsq(X, y[:, None]).solution[:, 0].tolist()
    return a, b


def n_for_kl(kl_fn: Callable[[int], float], kl: float, n_max: int = 10 ** 7) -> int | None:
    """The smallest n <= ``n_max`` with ``kl_fn(n) >= kl``, or None; ``kl_fn`` increasing in n (e.g. best_of_n_kl).

    Doubling then bisection: about 2 log2(n) calls of ``kl_fn`` instead of one per n.
    """
    if kl_fn(n_max) < kl:
        return None
    low, high = 0, 1                                       # kl_fn(low) < kl (n = 0 stands for "none yet")
    while kl_fn(high) < kl:
        low, high = high, min(2 * high, n_max)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if kl_fn(mid) < kl else (low, mid)
    return high


def plot_best_of_n(curve: dict, kl: Sequence[float], oracle: dict | None = None, fit: bool = True):
    """Two panels against KL = log n - (n-1)/n: the proxy reward best-of-n optimizes, and the gold reward it gets.

    ``oracle`` (optional): the same curve with the gold reward itself as the judge, drawn dashed;
    ``fit``: draw Gao et al.'s law fitted to the gold curve (see ``fit_gao``).
    """
    kl = torch.as_tensor(list(kl), dtype=torch.float64)
    fig, (ax_p, ax_g) = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    ax_p.plot(kl, curve["proxy"], "o-", color="tab:orange")
    ax_p.set_ylabel("proxy reward (learned RM)")
    ax_p.set_title("What best-of-n optimizes")
    ax_g.errorbar(kl, curve["gold"], yerr=curve["gold_se"], fmt="o-", color="tab:blue", capsize=2,
                  label="best-of-n judged by the reward model")
    if oracle is not None:
        ax_g.plot(kl, oracle["gold"], "--", color="grey", label="best-of-n judged by the gold reward")
    if fit:
        a, b = fit_gao(kl, curve["gold"])
        d = torch.linspace(0, float(kl.max()), 100, dtype=torch.float64).sqrt()
        ax_g.plot(d ** 2, float(curve["gold"][0]) + d * (a - b * d), ":", color="tab:blue",
                  label="fit d(a - b d), d = sqrt(KL)")
    ax_g.set_ylabel("gold reward P(positive)")
    ax_g.set_title("What we actually get")
    ax_g.legend(fontsize=8, loc="best")
    for ax in (ax_p, ax_g):
        ax.set_xlabel("KL(best-of-n || policy), nats")
        top = ax.secondary_xaxis("top")
        top.set_xticks(kl.tolist()[::2])
        top.set_xticklabels([str(int(n)) for n in curve["n"].tolist()[::2]], fontsize=7)
        top.set_xlabel("n", fontsize=8)
    fig.tight_layout()
    return fig


def show_picks(pool: dict, k: int = 3, width: int = 100) -> None:
    """For k prompts: a typical sample (the median proxy score) and the reward model's favourite of the pool."""
    for i in range(min(k, len(pool["prompts"]))):
        order = pool["proxy"][i].argsort()
        print(repr(pool["prompts"][i]))
        for label, j in (("median", int(order[len(order) // 2])), ("best", int(order[-1]))):
            text = f"  {label:6s} proxy {pool['proxy'][i, j]:6.2f}  gold {pool['gold'][i, j]:.2f}  {pool['completions'][i][j]!r}"
            print(text[:width])


def summarize_best_of_n(curve: dict, kl: Sequence[float], oracle: dict | None = None) -> dict:
    """Print and return where the gold reward of best-of-n peaks, and how it compares with the proxy's climb.

    ``peak_n``: the n with the highest gold; ``gold_gain_share``: the proxy-judged gold gain at n_max as a
    share of the gold-judged (oracle) gain, when ``oracle`` is given.
    """
    ns, gold, proxy = curve["n"].tolist(), curve["gold"], curve["proxy"]
    k = int(gold.argmax())
    out = {"peak_n": ns[k], "peak_kl": float(kl[k]), "gold_base": float(gold[0]), "gold_peak": float(gold[k]),
           "gold_last": float(gold[-1]), "n_last": ns[-1]}
    print(f"gold reward: {out['gold_base']:.3f} at n = 1, highest {out['gold_peak']:.3f} at n = {ns[k]} "
          f"(KL {out['peak_kl']:.2f} nats), {out['gold_last']:.3f} at n = {ns[-1]}")
    print(f"proxy reward: {float(proxy[0]):.3f} at n = 1, {float(proxy[-1]):.3f} at n = {ns[-1]} (still rising)")
    if oracle is not None:
        out["gold_gain_share"] = float((gold[-1] - gold[0]) / (oracle["gold"][-1] - oracle["gold"][0]).clamp(min=1e-9))
        print(f"best-of-{ns[-1]} judged by the reward model gains {out['gold_gain_share']:.0%} of what the gold "
              f"reward itself would gain as the judge")
    for key in ("peak_n", "gold_base", "gold_peak", "gold_last"):
        report.record(f"02_reward_model/best_of_n_{key}", out[key])
    return out
