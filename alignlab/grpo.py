"""GRPO on the arithmetic world (notebook 07): sample G answers per problem, verify, group advantages, clipped updates.

The loop takes the learner's functions (or the references): ``group_relative_advantages``,
``grpo_policy_loss`` and ``kl_estimators``. ``scale_rewards=False`` drops the std
division (Dr. GRPO); ``kl_coef`` adds a KL term to the reference, either k3 in the
loss (``kl_in="loss"``, as GRPO: kl_coef * k3 joins each token's loss and is aggregated
with it, as in the GRPO paper's objective and TRL's GRPOTrainer) or k1 subtracted from the
reward (``kl_in="reward"``).
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import arithmetic as ar
from . import reference
from .history import RunHistory
from .models import frozen_copy


@dataclass
class GRPOConfig:
    steps: int = 40                     # policy updates rounds (each: sample, verify, epochs of updates)
    prompts_per_step: int = 16          # problems per round
    group_size: int = 8                 # G completions per problem
    epochs: int = 2                     # clipped updates on each round's samples
    learning_rate: float = 3e-4
    clip_range: float = 0.2
    aggregation: str = "sequence_mean"  # "sequence_mean" (GRPO), "token_mean" (DAPO), "constant" (Dr. GRPO)
    scale_rewards: bool = True          # divide advantages by the group std (GRPO); False: Dr. GRPO
    kl_coef: float = 0.0                # KL to the starting policy; 0 = none
    kl_in: str = "loss"                 # "loss": k3 added to the loss; "reward": k1 subtracted from the reward
    temperature: float = 1.0
    eval_every: int = 10
    eval_problems: int = 200
    seed: int = 0

    @classmethod
    def for_track(cls, track, **overrides) -> "GRPOConfig":
        """GRPO sizes for ``track`` (CPU, GPU, grading); ``overrides`` replace any field.

        The GPU track keeps the CPU sizes (about a minute): the arithmetic world is tiny either way.
        """
        cfg = cls(steps=track.pick(cpu=40, grading=3), prompts_per_step=track.pick(cpu=16, grading=4),
                  eval_every=track.pick(cpu=10, grading=2), eval_problems=track.pick(cpu=200, grading=40))
        return replace(cfg, **overrides)


def completion_token_logps(model, prompts, completions):
    """Per-token log-probs (N, T) of the completion tokens over the answer tokens (padding read as <eos>, masked later).

    (``alignlab.dpo.completion_logps`` is the per-sequence sum, for the GPT-2 world.)
    """
    comp = torch.where(completions == ar.PAD, torch.full_like(completions, ar.EOS), completions)
    ids = torch.cat([prompts, comp], dim=1)
    # Every position is real (padding was read as <eos> above), so the attention mask is all ones: said
    # explicitly, which also keeps transformers from warning that the ids might be padded.
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits                     # (N, P+T, V)
    logits = ar.restrict(logits[:, prompts.shape[1] - 1:-1, :].float())
    return torch.log_softmax(logits, -1).gather(-1, comp[..., None]).squeeze(-1)


def aggregate_tokens(per_token, mask, aggregation: str):
    """One number from per-token values (B, T), aggregated as ``grpo_policy_loss`` aggregates its losses.

    "sequence_mean": the mean over rows of each row's masked mean (a row's count clamped at 1);
    "token_mean": masked sum / masked count; "constant": masked sum / (B * T).
    """
    m = mask.to(per_token.dtype)
    total = per_token * m
    if aggregation == "sequence_mean":
        return (total.sum(1) / m.sum(1).clamp(min=1)).mean()
    if aggregation == "token_mean":
        return total.sum() / m.sum()
    if aggregation == "constant":
        return total.sum() / (m.shape[0] * m.shape[1])
    raise ValueError(f"unknown aggregation {aggregation!r}")


def update_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, config: GRPOConfig,
                loss_fn: Callable | None = None, kl_fn: Callable | None = None):
    """The loss of one GRPO update: the clipped surrogate and, with ``kl_in="loss"``, kl_coef * k3 per token.

    The KL term sits inside the per-token loss, l_t + kl_coef * k3_t, and is aggregated with it (GRPO's
    objective, TRL's GRPOTrainer); aggregation being linear, that is ``loss_fn``'s result plus kl_coef times
    k3 aggregated the same way. ``ref_logprobs`` None: no KL term.
    """
    loss_fn = loss_fn or reference.grpo_policy_loss
    kl_fn = kl_fn or reference.kl_estimators
    loss = loss_fn(logprobs, old_logprobs, advantages, mask, config.clip_range, config.aggregation)
    if ref_logprobs is not None and config.kl_coef > 0 and config.kl_in == "loss":
        k3 = kl_fn(logprobs, ref_logprobs, mask)[2]
        loss = loss + config.kl_coef * aggregate_tokens(k3, mask, config.aggregation)
    return loss


def evaluate(model, problems) -> dict:
    _, comp = ar.sample(model, problems, n=1, temperature=0)
    mask = ar.completion_mask(comp)
    return {"accuracy": ar.rewards_for(problems, comp, 1).mean().item(), "length": mask.sum(1).mean().item()}


def train_grpo(policy, train_problems, eval_problems, config: GRPOConfig, advantages_fn: Callable | None = None,
               loss_fn: Callable | None = None, kl_fn: Callable | None = None, progress: bool = True,
               desc: str = "GRPO") -> RunHistory:
    """Train ``policy`` in place; return the history.

    ``history.steps``: one row per step (step, reward, sample_length, wrong_length, seconds);
    ``history.evals``: step 0, every ``eval_every`` steps and the last (step, accuracy, length, seconds).
    """
    advantages_fn = advantages_fn or reference.group_relative_advantages
    loss_fn = loss_fn or reference.grpo_policy_loss
    kl_fn = kl_fn or reference.kl_estimators
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    ref_model = frozen_copy(policy) if config.kl_coef > 0 else None
    opt = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    evals = eval_problems[:config.eval_problems]
    history, start = RunHistory(config=asdict(config)), time.time()
    policy.eval()
    history.evals.append({"step": 0, "seconds": 0.0, **evaluate(policy, evals)})
    bar = tqdm(range(1, config.steps + 1), desc=desc, disable=not progress, leave=False)
    for step in bar:
        problems = rng.sample(train_problems, config.prompts_per_step)
        prompts, comp = ar.sample(policy, problems, n=config.group_size, temperature=config.temperature, generator=gen)
        mask = ar.completion_mask(comp)
        rewards = ar.rewards_for(problems, comp, config.group_size)                     # (P, G)
        with torch.no_grad():
            old = completion_token_logps(policy, prompts, comp)
            ref = completion_token_logps(ref_model, prompts, comp) if ref_model is not None else None
        shaped = rewards
        if ref is not None and config.kl_in == "reward":
            k1 = kl_fn(old, ref, mask)[0].sum(1).view_as(rewards)
            shaped = rewards - config.kl_coef * k1.float()
        if config.scale_rewards:
            adv = advantages_fn(shaped)
        else:
            adv = shaped - shaped.mean(1, keepdim=True)
        adv = adv.reshape(-1).float().detach()
        policy.train()
        for _ in range(config.epochs):
            lp = completion_token_logps(policy, prompts, comp)
            loss = update_loss(lp, old, ref, adv, mask, config, loss_fn, kl_fn)
            opt.zero_grad()
            loss.backward()
            opt.step()
        policy.eval()
        row = {"step": step, "reward": rewards.mean().item(), "sample_length": mask.sum(1).mean().item()}
        wrong = rewards.view(-1) == 0
        row["wrong_length"] = mask.sum(1)[wrong].mean().item() if wrong.any() else float("nan")
        row["seconds"] = time.time() - start
        history.steps.append(row)
        if step % config.eval_every == 0 or step == config.steps:
            history.evals.append({"step": step, **evaluate(policy, evals), "seconds": time.time() - start})
            bar.set_postfix(acc=f"{history.final['accuracy']:.2f}", reward=f"{row['reward']:.2f}")
    history.seconds = time.time() - start
    return history


def plot_runs(runs: dict[str, RunHistory]):
    """Held-out greedy accuracy and the mean length of sampled completions, one line per run."""
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, h in runs.items():
        a.plot(h.column("step", evals=True), h.column("accuracy", evals=True), marker="o", label=name)
        b.plot(h.column("step"), h.column("wrong_length"), label=name, alpha=0.8)
    a.set(xlabel="GRPO step", ylabel="held-out greedy accuracy", title="Accuracy")
    b.set(xlabel="GRPO step", ylabel="tokens (with <eos>)", title="Mean length of wrong sampled answers")
    a.legend()
    b.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_pass_at_k(before: dict, after: dict):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ks = sorted(before)
    ax.plot(ks, [before[k] for k in ks], marker="o", label="base policy")
    ax.plot(ks, [after[k] for k in ks], marker="o", label="after GRPO")
    ax.set(xscale="log", xlabel="k", ylabel="pass@k (held-out, T = 1)", title="pass@k before and after RL")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig
