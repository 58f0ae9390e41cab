"""Plots for notebook 04: the curves of one PPO run, and proxy vs gold reward across runs (reward hacking)."""
from __future__ import annotations

import matplotlib.pyplot as plt

from .ppo import PPOHistory


def plot_ppo_history(history: PPOHistory, title: str = "PPO"):
    """Four panels: proxy score, gold reward, KL, and the update's health (clip fraction, approx KL, entropy)."""
    it = history.column("iteration")
    ev = history.evals
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    ax = axes[0]
    ax.plot(it, history.column("score"), color="tab:blue")
    ax.axhline(0.0, color="gray", lw=0.8, ls=":")
    ax.set(title="proxy reward (mean score of the rollouts)", xlabel="iteration")
    ax = axes[1]
    ax.plot([e["iteration"] for e in ev], [e["gold"] for e in ev], "o-", color="tab:green")
    ax.set(title="gold reward (held-out prompts)", xlabel="iteration", ylim=(0, 1))
    ax = axes[2]
    ax.plot(it, history.column("rollout_kl"), color="tab:orange", label="rollouts (sampling temperature)")
    ax.plot([e["iteration"] for e in ev], [e["kl"] for e in ev], "o-", color="tab:red", label="held-out, temperature 1")
    ax.set(title="sequence KL to the reference (nats)", xlabel="iteration")
    ax.legend(fontsize=8)
    ax = axes[3]
    ax.plot(it, history.column("clipfrac"), label="clip fraction")
    ax.plot(it, history.column("approx_kl"), label="approx KL (per token, per update)")
    ax.plot(it, [e / 10 for e in history.column("entropy")], label="entropy / 10 (nats per token)")
    ax.set(title="health of the update", xlabel="iteration")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_proxy_vs_gold(runs: dict[str, PPOHistory]):
    """For each run: proxy score and gold reward at each evaluation, against the iteration and against KL."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for (name, history), color in zip(runs.items(), ["tab:blue", "tab:red", "tab:purple", "tab:green"]):
        its = [e["iteration"] for e in history.evals]
        axes[0].plot(history.column("iteration"), history.column("score"), color=color, label=name)
        axes[1].plot(its, [e["gold"] for e in history.evals], "o-", color=color, label=name)
        axes[2].plot([e["kl"] for e in history.evals], [e["gold"] for e in history.evals], "o-", color=color, label=name)
    axes[0].set(title="proxy reward (what PPO optimizes)", xlabel="iteration")
    axes[1].set(title="gold reward (what we want)", xlabel="iteration", ylim=(0, 1))
    axes[2].set(title="gold reward against KL", xlabel="sequence KL (nats)", ylabel="gold", ylim=(0, 1))
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
