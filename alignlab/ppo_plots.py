"""Plots for notebook 04: the curves of one PPO run, and proxy vs gold reward across runs (reward hacking)."""
from __future__ import annotations

import matplotlib.pyplot as plt

from .ppo import PPOHistory


def plot_ppo_history(history: PPOHistory, title: str = "PPO"):
    """Six panels: proxy score, gold reward, KL; completion length, EOS rate, the update's health.

    Length: the rollouts' mean completion tokens each iteration (``steps``' ``length``) and the held-out
    evaluations' (``evals``' ``length``); EOS rate: the share of held-out completions that end with EOS
    within the budget (``evals``' ``eos_rate``). A panel whose field the run did not log stays empty.
    """
    it = history.column("iteration")
    ev = history.evals
    ev_it = [e["iteration"] for e in ev]
    fig, axes = plt.subplots(2, 3, figsize=(15, 6.4))
    ax = axes[0, 0]
    ax.plot(it, history.column("score"), color="tab:blue")
    ax.axhline(0.0, color="gray", lw=0.8, ls=":")
    ax.set(title="proxy reward (mean score of the rollouts)", xlabel="iteration")
    ax = axes[0, 1]
    ax.plot(ev_it, [e["gold"] for e in ev], "o-", color="tab:green")
    ax.set(title="gold reward (held-out prompts)", xlabel="iteration", ylim=(0, 1))
    ax = axes[0, 2]
    ax.plot(it, history.column("rollout_kl"), color="tab:orange", label="rollouts (sampling temperature)")
    ax.plot(ev_it, [e["kl"] for e in ev], "o-", color="tab:red", label="held-out, temperature 1")
    ax.set(title="sequence KL to the reference (nats)", xlabel="iteration")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    if all("length" in row for row in history.steps):
        ax.plot(it, history.column("length"), color="tab:brown", label="rollouts")
    if ev and all("length" in e for e in ev):
        ax.plot(ev_it, [e["length"] for e in ev], "o-", color="tab:purple", label="held-out, temperature 1")
    ax.set(title="mean completion length (tokens, EOS counted)", xlabel="iteration")
    if ax.lines:
        ax.legend(fontsize=8)
    ax = axes[1, 1]
    if ev and all("eos_rate" in e for e in ev):
        ax.plot(ev_it, [e["eos_rate"] for e in ev], "o-", color="tab:gray")
    ax.set(title="completions that end with EOS (held-out)", xlabel="iteration", ylim=(0, 1.05))
    ax = axes[1, 2]
    ax.plot(it, history.column("clipfrac"), label="clip fraction")
    ax.plot(it, history.column("approx_kl"), label="approx KL (per token, per update)")
    ax.plot(it, [e / 10 for e in history.column("entropy")], label="entropy / 10 (nats per token)")
    ax.set(title="health of the update", xlabel="iteration")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_proxy_vs_gold(runs: dict[str, PPOHistory]):
    """For each run: proxy score and gold reward at each evaluation, against the iteration and against KL,
    and the held-out completions' mean length (tokens) at each evaluation (where the evaluations logged it)."""
    fig, axes = plt.subplots(1, 4, figsize=(19, 3.6))
    for (name, history), color in zip(runs.items(), ["tab:blue", "tab:red", "tab:purple", "tab:green"]):
        its = [e["iteration"] for e in history.evals]
        axes[0].plot(history.column("iteration"), history.column("score"), color=color, label=name)
        axes[1].plot(its, [e["gold"] for e in history.evals], "o-", color=color, label=name)
        axes[2].plot([e["kl"] for e in history.evals], [e["gold"] for e in history.evals], "o-", color=color, label=name)
        if history.evals and all("length" in e for e in history.evals):
            axes[3].plot(its, [e["length"] for e in history.evals], "o-", color=color, label=name)
    axes[0].set(title="proxy reward (what PPO optimizes)", xlabel="iteration")
    axes[1].set(title="gold reward (what we want)", xlabel="iteration", ylim=(0, 1))
    axes[2].set(title="gold reward against KL", xlabel="sequence KL (nats)", ylabel="gold", ylim=(0, 1))
    axes[3].set(title="mean completion length (held-out, tokens)", xlabel="iteration")
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
