"""Plots for the policy-gradient notebook: estimators against the exact gradient, training curves, reused samples."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt

from .history import RunHistory


def plot_estimators(rows: Sequence[dict]):
    """Two panels against the batch size: mean cosine of one batch's estimate to the exact gradient, and variance."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name in dict.fromkeys(r["estimator"] for r in rows):
        mine = [r for r in rows if r["estimator"] == name]
        batch = [r["batch"] for r in mine]
        a.plot(batch, [r["cos"] for r in mine], marker="o", label=name)
        b.plot(batch, [r["variance"] for r in mine], marker="o", label=name)
    a.set(xscale="log", xlabel="batch (problems x G)", ylabel="mean cosine to the exact gradient",
          title="How well one batch points the right way")
    b.set(xscale="log", yscale="log", xlabel="batch (problems x G)", ylabel="variance / |exact gradient|^2",
          title="Variance of the estimate over batches")
    a.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_training(runs: Mapping[str, RunHistory]):
    """Held-out exact expected reward (pass@1 at T = 1) and the entropy of the sampled positions, one line per run."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, h in runs.items():
        a.plot(h.column("step", evals=True), h.column("expected_reward", evals=True), marker="o", label=name)
        b.plot(h.column("step"), h.column("entropy"), label=name, alpha=0.8)
    a.set(xlabel="step", ylabel="E[reward] on held-out problems (exact)", title="Expected reward")
    b.set(xlabel="step", ylabel="nats per sampled position", title="Entropy of the policy")
    a.legend()
    b.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_reuse(rows: Sequence[dict]):
    """Updates on one batch: the cosine of each surrogate's expected gradient to the exact one, and KL to pi_old."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    reuse = [r for r in rows if r["run"] == "reuse"]
    for key, label in (("naive", "A log pi (reused as if fresh)"), ("token_ratio", "A x per-token ratio (PPO)"),
                       ("sequence_ratio", "A x sequence ratio")):
        a.plot([r["update"] for r in reuse], [r[key] for r in reuse], marker="o", label=label)
    for run in ("reuse", "clipped"):
        mine = [r for r in rows if r["run"] == run]
        b.plot([r["update"] for r in mine], [r["kl"] for r in mine], marker="o",
               label="REINFORCE loss, reused" if run == "reuse" else "clipped ratio (PPO)")
    a.set(xlabel="updates on the same batch", ylabel="cosine to the exact gradient", title="Expected gradient, off-policy")
    b.set(xlabel="updates on the same batch", ylabel="KL(pi_k || pi_old), nats", title="How far the policy moved")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig
