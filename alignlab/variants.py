"""Notebook 06's experiment helpers: noisy labels, loss shapes, completion lengths, and the comparison plots.

>>> noisy = flip_labels(pairs, fraction=0.2, seed=0)        # extra annotator mistakes
>>> label_agreement(noisy)                                   # share of pairs the gold classifier agrees with
>>> plot_loss_shapes({"DPO": dpo_fn, "IPO": ipo_fn})         # per-pair loss and gradient against h
>>> plot_runs({"DPO": history, "IPO": history2}, base=base)  # gold against KL, one path per run

A run is anything with ``evals``: a list of dicts with ``step``, ``gold`` and ``kl``
(``alignlab.dpo.DPOHistory``, ``alignlab.online.OnlineHistory``).
"""
from __future__ import annotations

import math
import random
from typing import Callable, Mapping, Sequence

import torch


# ------------------------------------------------------------------ pairs
def flip_labels(pairs: Sequence[dict], fraction: float, seed: int = 0) -> list[dict]:
    """A copy of ``pairs`` where a random ``fraction`` of them has chosen and rejected swapped.

    Every ``*chosen*`` field trades places with its ``*rejected*`` twin (ids, gold
    scores, reference log-probs); ``p_chosen`` becomes ``1 - p_chosen``; flipped rows
    get ``"flipped": True``. The rows of ``pairs`` are not modified.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    rng = random.Random(seed)
    out = []
    for row in pairs:
        row = dict(row)
        if rng.random() < fraction:
            for key in [k for k in row if "chosen" in k and k != "p_chosen"]:
                twin = key.replace("chosen", "rejected")
                if twin in row:
                    row[key], row[twin] = row[twin], row[key]
            if "p_chosen" in row:
                row["p_chosen"] = 1.0 - row["p_chosen"]
            row["flipped"] = True
        out.append(row)
    return out


def label_agreement(pairs: Sequence[dict]) -> float:
    """Share of pairs whose chosen completion has the strictly higher gold score."""
    return sum(r["gold_chosen"] > r["gold_rejected"] for r in pairs) / max(1, len(pairs))


def pair_lengths(pairs: Sequence[dict], eos_id: int | None = None) -> dict:
    """Mean completion length (tokens) of chosen and rejected completions, and how often each ends with EOS."""
    chosen = torch.tensor([len(r["chosen_ids"]) for r in pairs], dtype=torch.float32)
    rejected = torch.tensor([len(r["rejected_ids"]) for r in pairs], dtype=torch.float32)
    out = {"chosen": chosen.mean().item(), "rejected": rejected.mean().item(),
           "longer_chosen": (chosen > rejected).float().mean().item(),
           "shorter_chosen": (chosen < rejected).float().mean().item()}
    if eos_id is not None:
        out["eos_chosen"] = sum(bool(r["chosen_ids"]) and r["chosen_ids"][-1] == eos_id for r in pairs) / len(pairs)
        out["eos_rejected"] = sum(bool(r["rejected_ids"]) and r["rejected_ids"][-1] == eos_id for r in pairs) / len(pairs)
    return out


# ------------------------------------------------------------------ loss shapes
def loss_shape(loss_fn: Callable, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair loss and its derivative with respect to h, for a four-argument DPO-style loss.

    ``loss_fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected)`` (other arguments bound)
    returns a batch-mean loss or a tuple starting with it. Each h is put on the chosen
    policy log-prob with zeros elsewhere, so dpo_logits = h. Shapes: h (N,) -> ((N,), (N,)).
    """
    losses, grads = [], []
    for value in h.tolist():
        x = torch.tensor([value], dtype=torch.float64, requires_grad=True)              # (1,)
        zero = torch.zeros(1, dtype=torch.float64)
        out = loss_fn(x, zero, zero, zero)
        loss = out[0] if isinstance(out, (tuple, list)) else out
        (grad,) = torch.autograd.grad(loss, x)
        losses.append(float(loss.detach()))
        grads.append(float(grad))
    return torch.tensor(losses), torch.tensor(grads)


def plot_loss_shapes(losses: Mapping[str, Callable], h_range: tuple[float, float] = (-40.0, 60.0),
                     points: int = 201, ylim: float = 4.0, targets: Mapping[str, float] | None = None):
    """The per-pair loss against h (one panel), then the pull -d loss / d h of each loss on its own y-axis.

    The pulls differ by orders of magnitude (IPO's grows linearly in h, DPO's is at most beta), so each
    gets its own panel and scale; positive pull raises h. ``targets``: a dotted line where a loss stops.
    """
    import matplotlib.pyplot as plt

    h = torch.linspace(*h_range, points, dtype=torch.float64)                            # (N,)
    fig, axes = plt.subplots(1, 1 + len(losses), figsize=(3.6 * (1 + len(losses)), 3.3))
    ax_loss = axes[0]
    for i, (name, fn) in enumerate(losses.items()):
        loss, grad = loss_shape(fn, h)
        ax_pull = axes[1 + i]
        ax_loss.plot(h, loss, color=f"C{i}", label=name)
        ax_pull.plot(h, -grad, color=f"C{i}")
        ax_pull.axhline(0, color="grey", lw=0.5)
        ax_pull.set(xlabel="h, nats", ylabel="-d loss / d h", title=f"pull: {name}")
        ax_pull.title.set_fontsize(9)
        if targets and name in targets:
            for ax in (ax_loss, ax_pull):
                ax.axvline(targets[name], color=f"C{i}", ls=":", lw=1)
    ax_loss.set(xlabel="h = log-ratio(chosen) - log-ratio(rejected), nats", ylabel="per-pair loss",
                title="loss", ylim=(0, ylim))
    ax_loss.legend(fontsize=7)
    for ax in axes:
        ax.axvline(0, color="grey", lw=0.5)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ runs
def summary_table(runs: Mapping[str, object], base: dict | None = None,
                  columns: Sequence[str] = ("gold", "kl", "length")) -> str:
    """A plain-text table of each run's final evaluation (and the base policy's), one row per run."""
    head = f"{'run':<36}" + "".join(f"{c:>9}" for c in columns)
    rows = [head]
    items = ([("base policy", base)] if base is not None else []) + [(k, getattr(r, "final", r)) for k, r in runs.items()]
    for name, final in items:
        cells = "".join(f"{final[c]:>9.3f}" if isinstance(final.get(c), (int, float)) else f"{'-':>9}" for c in columns)
        rows.append(f"{name:<36}" + cells)
    return "\n".join(rows)


def plot_runs(runs: Mapping[str, object], base: dict | None = None, title: str = "", x: str = "step"):
    """Left: gold reward against training ``x`` (step); right: each run's path in the gold-vs-KL plane.

    Where the evaluations carry ``gold_std`` and ``n`` (``evaluate_policy`` does), each point has an error
    bar of one standard error of the gold mean, so a gap smaller than the bars reads as the noise it is.
    """
    import matplotlib.pyplot as plt

    fig, (ax_gold, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, run) in enumerate(runs.items()):
        evals = run.evals
        se = [e["gold_std"] / math.sqrt(e["n"]) if "gold_std" in e and e.get("n") else 0.0 for e in evals]
        ax_gold.errorbar([e[x] for e in evals], [e["gold"] for e in evals], yerr=se, fmt="o-", ms=4, capsize=2,
                         color=f"C{i}", label=name)
        ax_kl.errorbar([e["kl"] for e in evals], [e["gold"] for e in evals], yerr=se, fmt="o-", ms=4, capsize=2,
                       color=f"C{i}", label=name)
        ax_kl.annotate(name, (evals[-1]["kl"], evals[-1]["gold"]), fontsize=8, color=f"C{i}",
                       xytext=(4, -3), textcoords="offset points")
    if base is not None:
        ax_gold.axhline(base["gold"], color="k", ls=":", lw=1, label="base policy")
        ax_kl.scatter([0.0], [base["gold"]], color="k", marker="*", s=80, zorder=3, label="base policy")
    ax_gold.set(xlabel=f"training {x}", ylabel="gold reward (mean P(positive))", title="gold reward during training")
    ax_kl.set(xlabel="sequence KL(policy || reference), nats", ylabel="gold reward", title="gold reward vs KL")
    for ax in (ax_gold, ax_kl):
        ax.grid(alpha=0.3)
    ax_gold.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_lengths(lengths: Mapping[str, Sequence[float]], max_new_tokens: int, data: dict | None = None):
    """Histograms of completion lengths (tokens) per policy; ``data`` adds the pairs' chosen/rejected means."""
    import matplotlib.pyplot as plt

    panels = 2 if data else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.4), squeeze=False)
    ax = axes[0, 0]
    bins = torch.arange(0.5, max_new_tokens + 1.5, 1.0).tolist()
    for i, (name, values) in enumerate(lengths.items()):
        values = [float(v) for v in values]
        mean = sum(values) / max(1, len(values))
        ax.hist(values, bins=bins, histtype="step", lw=1.5, color=f"C{i}", label=f"{name}: mean {mean:.1f}")
    ax.set(xlabel="completion length (tokens, EOS included)", ylabel="completions",
           title=f"how long the policy writes (limit {max_new_tokens})")
    ax.legend(fontsize=8, loc="upper left")
    if data:
        ax = axes[0, 1]
        ax.bar(["chosen", "rejected"], [data["chosen"], data["rejected"]], color=["C2", "C3"])
        for j, key in enumerate(("chosen", "rejected")):
            ax.text(j, data[key], f"{data[key]:.2f}", ha="center", va="bottom", fontsize=9)
        ax.set(ylabel="mean length (tokens)", title="in the preference pairs",
               ylim=(0, max(data["chosen"], data["rejected"]) * 1.2))
    fig.tight_layout()
    return fig


def gold_per_nat(run_final: dict, base: dict) -> float:
    """Gold gained per nat of KL spent, (gold - base gold) / KL (nan when KL is ~0)."""
    kl = run_final["kl"]
    return (run_final["gold"] - base["gold"]) / kl if kl > 1e-6 else math.nan


def same_weights(model_a, model_b) -> bool:
    """True when two models have identical parameters (e.g. a copy of the SFT model that has not trained yet)."""
    pa, pb = list(model_a.parameters()), list(model_b.parameters())
    return len(pa) == len(pb) and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(pa, pb))


__all__ = ["flip_labels", "label_agreement", "pair_lengths", "loss_shape", "plot_loss_shapes", "summary_table",
           "plot_runs", "plot_lengths", "gold_per_nat", "same_weights"]
