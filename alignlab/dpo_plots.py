"""Plots for notebook 05: the curves of one DPO run, and the beta explorer (per-pair loss and gradient weight)."""
from __future__ import annotations

import math
from typing import Callable

import matplotlib.pyplot as plt
import torch

from . import reference as ref_math
from .dpo import DPOHistory


def plot_history(history: DPOHistory, title: str = "DPO"):
    """Loss, implicit-reward accuracy and margin per step (and on held-out pairs); gold reward and KL per evaluation;
    the mean completion length per evaluation when the evaluations measured it (``evaluate_policy``'s ``length``)."""
    steps = history.column("step")
    with_length = bool(history.evals) and all("length" in e for e in history.evals)
    panels = (3 if history.evals else 2) + with_length
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.2))
    axes[0].plot(steps, history.column("loss"), lw=1, label="training batches")
    axes[0].axhline(math.log(2), color="grey", ls=":", label="ln 2 (policy = reference)")
    axes[0].set(xlabel="step", ylabel="loss", title=f"{title}: loss")
    axes[1].plot(steps, history.column("rewards/accuracies"), lw=1, label="training batches")
    if history.heldout:
        held = [h["step"] for h in history.heldout]
        axes[0].plot(held, [h["loss"] for h in history.heldout], "o-", ms=3, color="C2", label="held-out pairs")
        axes[1].plot(held, [h["rewards/accuracies"] for h in history.heldout], "o-", ms=3, color="C2",
                     label="held-out pairs")
    margin = axes[1].twinx()
    margin.plot(steps, history.column("rewards/margins"), lw=1, color="C1", alpha=0.6, label="margin (training)")
    axes[1].set(xlabel="step", ylabel="implicit-reward accuracy", title="implicit rewards", ylim=(0, 1))
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8, loc="lower right")
    margin.set_ylabel("margin r_w - r_l (training)", color="C1")
    if history.evals:
        ev = history.evals
        axes[2].plot([e["step"] for e in ev], [e["gold"] for e in ev], "o-", label="gold")
        kl = axes[2].twinx()
        kl.plot([e["step"] for e in ev], [e["kl"] for e in ev], "s--", color="C3", label="KL")
        axes[2].set(xlabel="step", ylabel="gold reward", title="gold reward and sequence KL")
        kl.set_ylabel("sequence KL (nats)", color="C3")
    if with_length:
        ev = history.evals
        axes[3].plot([e["step"] for e in ev], [e["length"] for e in ev], "o-", color="C4")
        axes[3].axhline(ev[0]["length"], color="grey", ls=":", label="before training")
        axes[3].set(xlabel="step", ylabel="mean completion length (tokens)", title="length of the policy's samples")
        axes[3].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_logratios(history: DPOHistory, beta: float, title: str = "DPO"):
    """The mean log-ratio log pi/pi_ref of the chosen and of the rejected completions along a run.

    Training batches per step (``rewards/chosen`` and ``rewards/rejected`` divided by ``beta``) and, when the
    run measured them, the held-out pairs. Below zero, the policy gives those completions less probability
    than the reference did; both below zero is likelihood displacement.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    steps = history.column("step")
    for side, color in (("chosen", "C2"), ("rejected", "C3")):
        ax.plot(steps, [r / beta for r in history.column(f"rewards/{side}")], lw=1, color=color, alpha=0.5,
                label=f"{side}, training batches")
        held = [h for h in history.heldout if f"rewards/{side}" in h]
        if held:
            ax.plot([h["step"] for h in held], [h[f"rewards/{side}"] / beta for h in held], "o-", ms=3, color=color,
                    label=f"{side}, held-out pairs")
    ax.axhline(0.0, color="grey", ls=":", label="the reference's probability")
    ax.set(xlabel="step", ylabel="mean log pi/pi_ref (nats)", title=f"{title}: log-ratios of chosen and rejected")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def beta_explorer(preference_probability_fn: Callable | None = None, gradient_weight_fn: Callable | None = None):
    """An ipywidgets slider over beta: per-pair loss and gradient weight against the log-ratio difference h.

    The functions have the exercise signatures (four (B,) log-prob tensors, beta); the
    curves put h on the chosen policy log-prob and zeros elsewhere, so dpo_logits = h.
    """
    import ipywidgets as widgets

    prob_fn = preference_probability_fn or ref_math.dpo_preference_probability
    weight_fn = gradient_weight_fn or ref_math.dpo_gradient_weight
    h = torch.linspace(-40, 40, 401, dtype=torch.float64)                   # (N,) log-ratio differences
    zeros = torch.zeros_like(h)

    def show(beta=0.1):
        prob = prob_fn(h, zeros, zeros, zeros, beta)                         # (N,)
        loss = -torch.log(prob.clamp(min=1e-300))                            # (N,) per-pair loss
        weight = weight_fn(h, zeros, zeros, zeros, beta)                     # (N,)
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        axes[0].plot(h, loss)
        axes[0].set(xlabel="h = log-ratio(chosen) - log-ratio(rejected)", ylabel="-log sigmoid(beta h)",
                    title=f"per-pair loss, beta = {beta:.3g}", ylim=(0, 5))
        axes[1].plot(h, weight, color="C1")
        axes[1].set(xlabel="h", ylabel="sigmoid(-beta h)", title="gradient weight", ylim=(0, 1.02))
        for ax in axes:
            ax.axvline(0, color="grey", lw=0.5)
            ax.axvline(1 / beta, color="C2", ls=":", lw=1)
        axes[1].text(1 / beta, 0.05, " h = 1/beta", color="C2", fontsize=8)
        fig.tight_layout()
        plt.show()

    slider = widgets.FloatLogSlider(value=0.1, base=10, min=-2, max=0.5, step=0.05, description="beta")
    return widgets.interactive(show, beta=slider)


__all__ = ["plot_history", "plot_logratios", "beta_explorer"]
