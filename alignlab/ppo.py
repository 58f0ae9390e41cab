"""Notebook 03's PPO loop (RLHF): rollout -> score -> KL-shaped reward -> GAE -> several epochs of clipped updates.

The loop is CleanRL-flat and uses the field's names (``advantages``, ``returns``,
``ratio``, ``pg_loss``, ``v_loss``, ``approx_kl``, ``clipfrac``). The math it needs
is passed in as a :class:`PPOFunctions` (the learner's own functions in the
notebook, the course's reference elsewhere), so the learner's code trains the model.

Conventions (docs/architecture.md): a sequence is a left-padded prompt followed
by its completion; ``token_logprobs`` has shape (B, T-1) and entry t scores token
t+1, so the per-token mask is ``completion_mask[:, 1:]``; the value of the state
that emits token t+1 is the value head's output at position t.

Public entry points:

- :func:`run_ppo` -- one call, from a track or policy path to a :class:`PPOHistory`
  (notebook 04 uses it for its reward-vs-KL frontier).
- :func:`train_ppo` -- the loop itself, on models the caller already holds.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


RewardFn = Callable[["RolloutBatch"], torch.Tensor]   # a batch of rollouts -> (B,) scores (see text_reward, model_reward)


@dataclass
class PPOFunctions:
    """The six functions of notebook 03 that the loop calls (signatures: course-design section 4)."""

    kl_penalized_rewards: Callable
    masked_mean: Callable
    masked_whiten: Callable
    gae_advantages: Callable
    ppo_policy_loss: Callable
    ppo_value_loss: Callable

    @classmethod
    def reference(cls) -> "PPOFunctions":
        """The course's reference implementations (alignlab.reference)."""
        from . import reference

        return cls(**{name: getattr(reference, name) for name in cls.__dataclass_fields__})


@dataclass
class PPOHistory:
    """What a run logged: ``steps`` (one dict per iteration), ``evals`` (gold and KL), ``samples``."""

    config: dict = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)      # iteration, score, rollout_kl, kl_coef, pg_loss, v_loss, ...
    evals: list[dict] = field(default_factory=list)      # iteration, gold, kl (sequence KL at temperature 1), score
    samples: list[tuple[int, list[str]]] = field(default_factory=list)  # (iteration, a few rollout texts)

    def column(self, name: str, evals: bool = False) -> list[float]:
        return [row[name] for row in (self.evals if evals else self.steps)]

    @property
    def final(self) -> dict:
        """The last evaluation (gold, kl, ...)."""
        return self.evals[-1] if self.evals else {}


class KLController:
    """The KL coefficient: fixed (``target=None``) or adaptive (Ziegler et al. 2019).

    Adaptive: ``value *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_rollouts / horizon``.
    """

    def __init__(self, init: float, target: float | None = None, horizon: int = 10_000):
        self.value, self.target, self.horizon = float(init), target, horizon

    def update(self, kl: float, n_rollouts: int) -> None:
        if self.target is None:
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_rollouts / self.horizon


@dataclass
class RolloutBatch:
    """One iteration's rollouts and everything PPO needs from them, all detached. M = T-1 token positions."""

    input_ids: torch.Tensor        # (B, T) prompt (left-padded) + completion (right-padded)
    attention_mask: torch.Tensor   # (B, T)
    mask: torch.Tensor             # (B, M) float, 1 where entry t scores a completion token (completion_mask[:, 1:])
    logprobs: torch.Tensor         # (B, M) log pi_old(x[t+1] | x[..t]) at the sampling temperature
    ref_logprobs: torch.Tensor     # (B, M) the same under the frozen reference
    values: torch.Tensor           # (B, M) value of the state that emits token t+1
    has_eos: torch.Tensor          # (B,) bool, the completion ended with EOS
    texts: list[str]               # prompt + completion, decoded (what the reward reads)


def logprobs_of(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """gather(log_softmax(logits / temperature)) of the next tokens: (B, T, V), (B, T) -> (B, T-1), float32."""
    logp = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)     # (B, T-1, V)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)                # (B, T-1)


def forward_logprobs_values(policy, input_ids, attention_mask, temperature, mask):
    """One forward of the policy with value head -> (logprobs (B, M), values (B, M), mean entropy ()).

    The logits are divided by the sampling temperature, so the log-probs are those of the
    distribution the tokens were actually drawn from (otherwise the ratio is not 1 at the start).
    """
    logits, values = policy(input_ids, attention_mask)                        # (B, T, V), (B, T)
    logprobs = logprobs_of(logits, input_ids, temperature)                    # (B, M)
    with torch.no_grad():
        logp = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)  # (B, M, V)
        entropy = -(logp.exp() * logp).sum(-1)                                # (B, M)
        entropy = (entropy * mask).sum() / mask.sum().clamp(min=1)
    return logprobs, values[:, :-1].float(), entropy


@torch.no_grad()
def collect_rollouts(policy, ref_model, tokenizer, prompts: Sequence[str], cfg: "PPOConfig") -> RolloutBatch:
    """Sample one completion per prompt at ``cfg.temperature``; recompute log-probs and values; score the reference."""
    from .rollout import sample, sequence_token_logprobs

    ro = sample(policy, tokenizer, list(prompts), max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    mask = ro.completion_mask[:, 1:].float()                                   # (B, M)
    logprobs, values, _ = forward_logprobs_values(policy, ro.input_ids, ro.attention_mask, cfg.temperature, mask)
    ref_logprobs = sequence_token_logprobs(ref_model, ro.input_ids, ro.attention_mask, temperature=cfg.temperature)
    last = ro.input_ids.gather(1, _last_index(ro.completion_mask)[:, None]).squeeze(1)   # (B,)
    return RolloutBatch(
        input_ids=ro.input_ids, attention_mask=ro.attention_mask, mask=mask,
        logprobs=logprobs * mask, ref_logprobs=ref_logprobs.float() * mask, values=values * mask,
        has_eos=last == tokenizer.eos_token_id, texts=list(ro.texts),
    )


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    """Position of the last 1 in each row of a (B, T) mask -> (B,) long."""
    T = mask.shape[1]
    return T - 1 - mask.flip(-1).float().argmax(-1)


@dataclass
class PPOConfig:
    """Hyperparameters of the PPO loop. Defaults: the tiny track on a CPU (about 1 s an iteration)."""

    iterations: int = 50             # rollout-and-update rounds
    batch_size: int = 64             # prompts (= rollouts) sampled per iteration
    minibatch_size: int = 32         # rollouts per gradient step
    ppo_epochs: int = 4              # passes over each rollout batch (CleanRL's update_epochs)
    max_new_tokens: int = 24         # completion length limit
    temperature: float = 0.7         # sampling temperature; also divides the logits when log-probs are recomputed
    learning_rate: float = 1e-4      # Adam step size (policy and value head together)
    adam_eps: float = 1e-5           # Adam epsilon (CleanRL's choice; the default 1e-8 is jumpier)
    max_grad_norm: float = 1.0       # global gradient-norm clip
    kl_coef: float = 0.05            # beta of the per-token KL penalty -beta*(log pi - log pi_ref); the start value if adaptive
    adaptive_kl: bool = False        # adapt kl_coef toward target_kl (Ziegler et al.) instead of keeping it fixed
    target_kl: float = 6.0           # sequence KL (nats, at the sampling temperature) the adaptive controller aims for
    kl_horizon: int = 10_000         # rollouts over which the adaptive controller closes the gap
    gamma: float = 1.0               # discount; 1 is standard in RLHF (episodes are one completion)
    lam: float = 0.95                # GAE lambda: bias/variance of the advantage estimate
    clip_range: float = 0.2          # PPO ratio clip epsilon
    clip_range_value: float = 0.2    # value clip epsilon around the rollout's values
    vf_coef: float = 0.1             # weight of the value loss in the total loss
    whiten_advantages: bool = True   # normalize advantages over the batch's completion tokens
    missing_eos_penalty: float | None = None  # subtract this from the score of completions without EOS; None: off
    eval_every: int = 10             # evaluate gold reward and KL every this many iterations (and at the end)
    eval_prompts: int = 128          # held-out prompts per evaluation
    seed: int = 0                    # sampling and shuffling seed

    @classmethod
    def for_track(cls, track, **overrides) -> "PPOConfig":
        """Sizes for a track: the CPU defaults, larger on the GPU track, smallest under the grader."""
        cfg = cls(
            iterations=track.pick(cpu=50, gpu=150, grading=3),
            batch_size=track.pick(cpu=64, gpu=128, grading=16),
            minibatch_size=track.pick(cpu=32, gpu=32, grading=8),
            max_new_tokens=track.pick(cpu=24, gpu=48, grading=12),
            learning_rate=track.pick(cpu=1e-4, gpu=1.4e-5),
            eval_every=track.pick(cpu=10, gpu=25, grading=3),
            eval_prompts=track.pick(cpu=128, gpu=256, grading=16),
        )
        return replace(cfg, **overrides)


def train_ppo(
    policy,
    ref_model,
    tokenizer,
    reward_fn: RewardFn,
    prompts: Sequence[str],
    config: PPOConfig,
    fns: PPOFunctions | None = None,
    evaluate: Callable[[object], dict] | None = None,
    progress: bool = True,
) -> PPOHistory:
    """Train ``policy`` (a PolicyWithValue: ``policy(input_ids, attention_mask) -> (logits, values)``) in place.

    ``ref_model`` is the frozen reference causal LM; ``reward_fn`` scores a RolloutBatch (the
    proxy reward: ``model_reward`` or ``text_reward``); ``prompts`` are sampled with replacement; ``evaluate(policy)`` returns a
    dict with at least ``gold`` and ``kl`` and runs every ``config.eval_every`` iterations.
    Returns the history: one row per iteration in ``history.steps``, one per evaluation in
    ``history.evals``.
    """
    fns = fns or PPOFunctions.reference()
    cfg = config
    gen = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
    kl_ctl = KLController(cfg.kl_coef, cfg.target_kl if cfg.adaptive_kl else None, cfg.kl_horizon)
    history = PPOHistory(config=asdict(cfg))
    policy.eval()   # no dropout: the update's log-probs must equal the rollout's before the first step (ratio = 1)
    start = time.perf_counter()
    if evaluate is not None:
        history.evals.append({"iteration": 0, **evaluate(policy)})

    bar = tqdm(range(1, cfg.iterations + 1), desc="PPO", disable=not progress)
    for iteration in bar:
        # 1. Rollout: sample completions, then score them with the (proxy) reward.
        idx = torch.randint(len(prompts), (cfg.batch_size,), generator=gen)
        batch: RolloutBatch = collect_rollouts(policy, ref_model, tokenizer, [prompts[i] for i in idx], cfg)
        scores = reward_fn(batch).float().to(batch.logprobs.device)              # (B,)
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * (~batch.has_eos).float()

        # 2. KL-shaped per-token rewards, then advantages with GAE (no gradients here).
        with torch.no_grad():
            mask = batch.mask                                                       # (B, T-1) completion tokens
            rewards = fns.kl_penalized_rewards(scores, batch.logprobs, batch.ref_logprobs, mask, kl_ctl.value)
            advantages, returns = fns.gae_advantages(rewards, batch.values, mask, cfg.gamma, cfg.lam)
            if cfg.whiten_advantages:
                advantages = fns.masked_whiten(advantages, mask)
            advantages = advantages * mask                                        # whitening shifts padding too
            seq_kl = ((batch.logprobs - batch.ref_logprobs) * mask).sum(-1)       # (B,)

        # 3. Several epochs of clipped updates on shuffled minibatches of this rollout batch.
        stats = {"pg_loss": [], "v_loss": [], "clipfrac": [], "approx_kl": [], "entropy": []}
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(cfg.batch_size, generator=gen)
            for mb in order.split(cfg.minibatch_size):
                logprobs, values, entropy = forward_logprobs_values(
                    policy, batch.input_ids[mb], batch.attention_mask[mb], cfg.temperature, mask[mb]
                )
                pg_loss, clipfrac = fns.ppo_policy_loss(
                    logprobs, batch.logprobs[mb], advantages[mb], mask[mb], cfg.clip_range
                )
                v_loss = fns.ppo_value_loss(values, batch.values[mb], returns[mb], mask[mb], cfg.clip_range_value)
                loss = pg_loss + cfg.vf_coef * v_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    logratio = logprobs.detach() - batch.logprobs[mb]
                    approx_kl = fns.masked_mean((logratio.exp() - 1) - logratio, mask[mb])  # k3 estimator
                for name, value in (("pg_loss", pg_loss), ("v_loss", v_loss), ("clipfrac", clipfrac),
                                    ("approx_kl", approx_kl), ("entropy", entropy)):
                    stats[name].append(float(value))

        # 4. Adapt the KL coefficient (no-op when fixed), log, evaluate.
        rollout_kl = float(seq_kl.mean())
        kl_ctl.update(rollout_kl, cfg.batch_size)
        row = {
            "iteration": iteration,
            "score": float(scores.mean()),
            "rollout_kl": rollout_kl,
            "kl_coef": kl_ctl.value,
            "length": float(batch.mask.sum(-1).mean()),
            **{k: sum(v) / len(v) for k, v in stats.items()},
            "time": time.perf_counter() - start,
        }
        history.steps.append(row)
        if evaluate is not None and (iteration % cfg.eval_every == 0 or iteration == cfg.iterations):
            history.evals.append({"iteration": iteration, "score": row["score"], **evaluate(policy)})
            history.samples.append((iteration, batch.texts[:4]))
        bar.set_postfix(score=f"{row['score']:.2f}", kl=f"{rollout_kl:.1f}", clip=f"{row['clipfrac']:.2f}")
    return history
