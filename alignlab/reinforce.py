"""REINFORCE and RLOO on the arithmetic world (the policy-gradient notebook): sample, verify, one on-policy step.

Each step samples G answers to each of P problems at temperature 1, scores them with the exact verifier,
and takes ONE gradient step on the learner's ``reinforce_loss`` (on-policy: the samples are never reused),
with no baseline (``advantage="none"``) or RLOO's leave-one-out baseline (``advantage="rloo"``, the
learner's ``rloo_advantages``). It logs the entropy of the sampled positions (the learner's
``token_entropy`` over the 11 answer tokens) and, on held-out problems, the exact expected reward
(mean pi(right answer): pass@1 at temperature 1, computed, not sampled) and greedy accuracy.
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
from .policy_gradient import expected_reward

ADVANTAGES = ("none", "rloo")


@dataclass
class PGConfig:
    steps: int = 40                     # on-policy steps (each: sample, verify, one gradient step)
    prompts_per_step: int = 16          # P problems per step
    group_size: int = 8                 # G answers per problem (RLOO needs G >= 2)
    learning_rate: float = 3e-4         # Adam
    advantage: str = "rloo"             # "none": plain REINFORCE; "rloo": leave-one-out baseline
    temperature: float = 1.0            # sampling temperature (log-probs are computed at the same temperature)
    eval_every: int = 10                # steps between held-out evaluations
    eval_problems: int = 200            # held-out problems per evaluation
    seed: int = 0

    @classmethod
    def for_track(cls, track, **overrides) -> "PGConfig":
        """REINFORCE/RLOO sizes for ``track`` (CPU, GPU, grading); ``overrides`` replace any field.

        The CPU defaults take tens of seconds a run; the GPU track uses the same; the grader the smallest.
        """
        cfg = cls(steps=track.pick(cpu=40, grading=3), prompts_per_step=track.pick(cpu=16, grading=4),
                  eval_every=track.pick(cpu=5, grading=3), eval_problems=track.pick(cpu=200, grading=40))
        return replace(cfg, **overrides)


def _evaluate(model, problems) -> dict:
    with torch.no_grad():
        return {"expected_reward": float(expected_reward(model, problems)), "accuracy": ar.greedy_accuracy(model, problems)}


def train_pg(policy, train_problems, eval_problems, config: PGConfig, loss_fn: Callable | None = None,
             advantages_fn: Callable | None = None, entropy_fn: Callable | None = None, progress: bool = True,
             desc: str = "REINFORCE") -> RunHistory:
    """Train ``policy`` in place with REINFORCE (``config.advantage``); return the history.

    ``history.steps``: step, reward (mean of the samples), entropy (mean over sampled positions, nats),
    sample_length, seconds. ``history.evals``: step 0, every ``eval_every`` steps and the last: expected_reward
    (exact, held out), accuracy (greedy, held out), seconds.
    """
    if config.advantage not in ADVANTAGES:
        raise ValueError(f"advantage must be one of {ADVANTAGES}, got {config.advantage!r}")
    loss_fn = loss_fn or reference.reinforce_loss
    advantages_fn = advantages_fn or reference.rloo_advantages
    entropy_fn = entropy_fn or reference.token_entropy
    torch.manual_seed(config.seed)
    rng, gen = random.Random(config.seed), torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    evals = eval_problems[:config.eval_problems]
    history, start = RunHistory(config=asdict(config)), time.time()
    policy.eval()                                                     # no dropout: sampling and scoring agree
    history.evals.append({"step": 0, **_evaluate(policy, evals), "seconds": 0.0})
    allowed = torch.tensor(ar.ANSWER_TOKENS)
    for step in tqdm(range(1, config.steps + 1), desc=desc, disable=not progress, leave=False):
        problems = rng.sample(train_problems, config.prompts_per_step)
        prompts, comp = ar.sample(policy, problems, n=config.group_size, temperature=config.temperature, generator=gen)
        mask = ar.completion_mask(comp)                                                    # (B, 4)
        rewards = ar.rewards_for(problems, comp, config.group_size)                        # (P, G)
        baseline = None
        if config.advantage == "rloo":
            baseline = (rewards - advantages_fn(rewards)).reshape(-1).detach()             # mean of the other G - 1
        ids = torch.cat([prompts, torch.where(comp == ar.PAD, ar.EOS, comp)], dim=1)
        logits = policy(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, prompts.shape[1] - 1:-1, :]
        logits = logits.float() / config.temperature                                       # (B, 4, V)
        logp = torch.log_softmax(ar.restrict(logits), -1)
        lp = logp.gather(-1, torch.where(comp == ar.PAD, ar.EOS, comp)[..., None]).squeeze(-1) * mask    # (B, 4)
        loss = loss_fn(lp, rewards.reshape(-1), mask, baseline)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            entropy = entropy_fn(logits[..., allowed].detach(), mask)                      # (B, 4), 11 finite logits
        history.steps.append({"step": step, "reward": rewards.mean().item(), "entropy": float(entropy.sum() / mask.sum()),
                              "sample_length": mask.sum(1).mean().item(), "seconds": time.time() - start})
        if step % config.eval_every == 0 or step == config.steps:
            history.evals.append({"step": step, **_evaluate(policy, evals), "seconds": time.time() - start})
    history.seconds = time.time() - start
    return history
