"""Notebook 04's PPO loop (RLHF): rollout -> score -> KL-shaped reward -> GAE -> several epochs of clipped updates.

The loop is CleanRL-flat and uses the field's names (``advantages``, ``returns``,
``ratio``, ``pg_loss``, ``v_loss``, ``approx_kl``, ``clipfrac``). The math it needs
is passed in as a :class:`PPOFunctions` (the learner's own functions in the
notebook, the course's reference elsewhere), so the learner's code trains the model.

Conventions (docs/architecture.md): a sequence is a left-padded prompt followed
by its completion; ``token_logprobs`` has shape (B, T-1) and entry t scores token
t+1, so the per-token mask is ``completion_mask[:, 1:]``; the value of the state
that emits token t+1 is the value function's output at position t.

Public entry points:

- :func:`run_ppo` -- one call, from a track or policy path to a :class:`PPOHistory`
  (notebook 05 uses it for its reward-vs-KL frontier).
- :func:`train_ppo` -- the loop itself, on models the caller already holds.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from . import reference
from .evaluation import evaluate_policy
from .history import RunHistory
from .models import PolicyWithValue, frozen_copy, load_policy, load_sft_policy, load_tokenizer
from .pairs import load_prompts
from .rewards import gold_texts, load_gold
from .rollout import sample, sample_groups, sequence_token_logprobs

RewardFn = Callable[["RolloutBatch"], torch.Tensor]   # a batch of rollouts -> (B,) scores (ModelReward, TextReward)

@dataclass
class PPOFunctions:
    """The six functions of notebook 04 that the loop calls (signatures: docs/conventions.md)."""

    kl_penalized_rewards: Callable
    masked_mean: Callable
    masked_whiten: Callable
    gae_advantages: Callable
    ppo_policy_loss: Callable
    ppo_value_loss: Callable

    @classmethod
    def reference(cls) -> "PPOFunctions":
        """The course's reference implementations (alignlab.reference)."""
        return cls(**{name: getattr(reference, name) for name in cls.__dataclass_fields__})


PPOHistory = RunHistory  # one row per iteration in ``steps``; a few rollout texts in ``samples``


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


def forward_logprobs_values(policy, input_ids, attention_mask, temperature, mask):
    """One forward of a PolicyWithValue -> (logprobs (B, M), values (B, M), mean entropy ()).

    logprobs = gather(log_softmax(logits / temperature)) of the next tokens: the logits are divided
    by the sampling temperature, so these are the log-probs of the distribution the tokens were
    drawn from (otherwise the ratio is not 1 before the first update). Entropy is detached.
    Only the positions where ``mask`` is 1 are projected onto the vocabulary (the rest of
    ``logprobs`` is 0): on a small model that projection is most of the work, and PPO reads
    nothing else.
    """
    if not (hasattr(policy, "hidden_and_values") and hasattr(getattr(policy, "policy", None), "lm_head")):
        return _forward_logprobs_values_all_positions(policy, input_ids, attention_mask, temperature, mask)
    hidden, values = policy.hidden_and_values(input_ids, attention_mask)     # (B, T, H), (B, T)
    keep = mask.bool()                                                        # (B, M)
    logits = policy.policy.lm_head(hidden[:, :-1][keep]).float()             # (N, V) the masked positions only
    if temperature != 1.0:
        logits = logits / temperature
    normalizer = logits.logsumexp(-1)                                         # (N,)
    picked = logits.gather(-1, input_ids[:, 1:][keep][:, None]).squeeze(-1) - normalizer  # (N,)
    logprobs = torch.zeros(keep.shape, dtype=picked.dtype, device=picked.device).masked_scatter(keep, picked)
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)                                 # (N, V)
        entropy = (normalizer - (probs * logits).sum(-1)).mean() if len(picked) else picked.sum()   # ()
    return logprobs, values[:, :-1].float(), entropy


def _forward_logprobs_values_all_positions(policy, input_ids, attention_mask, temperature, mask):
    """``forward_logprobs_values`` for any ``policy(input_ids, attention_mask) -> (logits, values)``."""
    logits, values = policy(input_ids, attention_mask)                        # (B, T, V), (B, T)
    logp = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)   # (B, M, V)
    logprobs = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)           # (B, M)
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)                                # (B, M)
        entropy = (entropy * mask).sum() / mask.sum().clamp(min=1)            # ()
    return logprobs * mask, values[:, :-1].float(), entropy


def prompt_ids_of(prompt) -> list[int]:
    """A prompt as token ids: a row of ``load_prompts`` (its ``prompt_ids``) or a list of ids."""
    return list(prompt["prompt_ids"]) if isinstance(prompt, dict) else list(prompt)


@torch.no_grad()
def collect_rollouts(policy, ref_model, tokenizer, prompts: Sequence, cfg: "PPOConfig",
                     generator: torch.Generator | None = None) -> RolloutBatch:
    """Sample one completion per prompt at ``cfg.temperature``; recompute log-probs and values; score the reference.

    ``prompts``: rows of ``load_prompts`` or lists of token ids. The log-probs are recomputed with a
    full forward (rather than taken from the sampler's KV-cached steps), the same computation as
    the update's forward, so the ratio starts at 1 up to float rounding.
    """
    prompt_ids = [prompt_ids_of(p) for p in prompts]
    ro = sample(policy, prompt_ids, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, generator=generator)
    mask = ro.completion_mask[:, 1:].float()                                   # (B, M)
    logprobs, values, _ = forward_logprobs_values(policy, ro.input_ids, ro.attention_mask, cfg.temperature, mask)
    ref_logprobs = sequence_token_logprobs(ref_model, ro.input_ids, ro.attention_mask, temperature=cfg.temperature)
    texts = gold_texts(tokenizer, prompt_ids, ro.completion_ids)             # what TextReward's gold reads
    return RolloutBatch(
        input_ids=ro.input_ids, attention_mask=ro.attention_mask, mask=mask,
        logprobs=logprobs * mask, ref_logprobs=ref_logprobs * mask, values=values * mask,
        has_eos=ro.ended_with_eos.to(mask.device), texts=texts,
    )


@dataclass
class PPOConfig:
    """Hyperparameters of the PPO loop (``for_track`` scales them; ``docs/tuning.md`` has the runs behind them)."""

    iterations: int = 30             # rollout-and-update rounds
    batch_size: int = 64             # prompts (= rollouts) sampled per iteration
    minibatch_size: int = 32         # rollouts per gradient step
    ppo_epochs: int = 2              # passes over each rollout batch (CleanRL's update_epochs; 4 on the GPU track)
    max_new_tokens: int = 24         # completion length limit
    temperature: float = 1.0         # sampling temperature; also divides the logits when log-probs are recomputed
                                     # (1.0: train on the distribution that evaluation samples; TRL's examples use 0.7)
    learning_rate: float = 2e-4      # Adam step size (policy and value function together)
    adam_eps: float = 1e-5           # Adam epsilon (CleanRL's choice; the default 1e-8 is jumpier)
    max_grad_norm: float = 1.0       # global gradient-norm clip
    kl_coef: float = 0.06            # beta of the per-token KL penalty -beta*(log pi - log pi_ref); the start value if adaptive
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
    normalize_samples: int = 256     # reference samples that set the reward model's shift and scale
    seed: int = 0                    # sampling and shuffling seed

    @classmethod
    def for_track(cls, track, **overrides) -> "PPOConfig":
        """PPO sizes for ``track`` (CPU, GPU, grading); ``overrides`` replace any field."""
        cfg = cls(
            iterations=track.pick(cpu=30, gpu=150, grading=2),
            batch_size=track.pick(cpu=64, gpu=128, grading=8),
            minibatch_size=track.pick(cpu=32, gpu=32, grading=8),
            ppo_epochs=track.pick(cpu=2, gpu=4, grading=2),
            max_new_tokens=track.pick(cpu=24, gpu=48, grading=8),
            learning_rate=track.pick(cpu=2e-4, gpu=1.4e-5),
            eval_every=track.pick(cpu=10, gpu=25, grading=2),
            eval_prompts=track.pick(cpu=128, gpu=256, grading=8),
            normalize_samples=track.pick(cpu=256, gpu=512, grading=8),
        )
        return replace(cfg, **overrides)


def train_ppo(
    policy,
    ref_model,
    tokenizer,
    reward_fn: RewardFn,
    prompts: Sequence,
    config: PPOConfig,
    fns: PPOFunctions | None = None,
    evaluate: Callable[[object], dict] | None = None,
    progress: bool = True,
) -> PPOHistory:
    """Train ``policy`` (a PolicyWithValue: ``policy(input_ids, attention_mask) -> (logits, values)``) in place.

    ``ref_model`` is the frozen reference causal LM; ``reward_fn`` scores a RolloutBatch (the
    proxy reward: a ``ModelReward`` or ``TextReward``); ``prompts`` (rows of ``load_prompts`` or
    id lists) are drawn with replacement; ``evaluate(policy)`` returns a dict with at least
    ``gold`` and ``kl``; it runs before training, every ``config.eval_every`` iterations and at the end.
    Returns the history: one row per iteration in ``history.steps``, one per evaluation in
    ``history.evals``.
    """
    fns = fns or PPOFunctions.reference()
    cfg = config
    gen = torch.Generator().manual_seed(cfg.seed)                                   # prompts and minibatches
    device = next(policy.parameters()).device
    sampler = torch.Generator(device=device).manual_seed(cfg.seed)                 # completions
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
        batch = collect_rollouts(policy, ref_model, tokenizer, [prompts[i] for i in idx], cfg, generator=sampler)
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
                    stats[name].append(float(value.detach()) if torch.is_tensor(value) else float(value))

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


# ----------------------------------------------------------------- rewards for the loop
class ModelReward:
    """A reward model as a PPO reward: ``(score(input_ids, attention_mask) - shift) / scale`` on the rollout's tokens.

    The reward model reads the same token ids the policy sampled (no re-tokenization) at the last real token.
    """

    def __init__(self, reward_model, shift: float = 0.0, scale: float = 1.0):
        self.reward_model, self.shift, self.scale = reward_model, float(shift), float(scale)

    @torch.no_grad()
    def raw(self, batch: "RolloutBatch") -> torch.Tensor:
        return self.reward_model(batch.input_ids, batch.attention_mask).float()    # (B,)

    def __call__(self, batch: "RolloutBatch") -> torch.Tensor:
        return (self.raw(batch) - self.shift) / self.scale                          # (B,)


def model_reward(reward_model) -> ModelReward:
    """Wrap a RewardModel (``forward(input_ids, attention_mask) -> (B,)``) as a PPO reward, not yet normalized."""
    return ModelReward(reward_model)


class TextReward:
    """A text scorer (e.g. the gold classifier: ``texts -> (B,)``) as a PPO reward on the rollout's decoded texts."""

    def __init__(self, score_texts: Callable[[list[str]], torch.Tensor]):
        self.score_texts = score_texts

    def __call__(self, batch: "RolloutBatch") -> torch.Tensor:
        return torch.as_tensor(self.score_texts(batch.texts)).float()                # (B,)


@torch.no_grad()
def normalize_reward(reward: ModelReward, ref_model, tokenizer, prompts: Sequence, config: "PPOConfig",
                     n: int | None = None) -> ModelReward:
    """Shift and scale a reward model so the reference policy's samples score mean 0, std 1.

    Samples ``n`` (default ``config.normalize_samples``) completions from the reference at the
    config's temperature and length (the distribution PPO starts from). A Bradley-Terry reward is defined only up to a constant, so
    this loses nothing, and a KL coefficient keeps one meaning across reward models.
    """
    n = n or config.normalize_samples
    gen = torch.Generator().manual_seed(config.seed + 1)
    sampler = torch.Generator(device=next(ref_model.parameters()).device).manual_seed(config.seed + 1)
    idx = torch.randint(len(prompts), (n,), generator=gen).tolist()
    raw = []
    for part in sample_groups(ref_model, [prompt_ids_of(prompts[i]) for i in idx], 1, config.max_new_tokens,
                              temperature=config.temperature, generator=sampler, tokenizer=tokenizer,
                              prompts_per_call=config.batch_size):
        raw.append(reward.reward_model(part.rollout.input_ids, part.rollout.attention_mask).float().cpu())
    raw = torch.cat(raw)
    return ModelReward(reward.reward_model, shift=float(raw.mean()), scale=float(raw.std().clamp(min=1e-6)))


# ----------------------------------------------------------------- one call, for notebook 05's frontier
def run_ppo(policy_source, reward, config: PPOConfig, fns: PPOFunctions | None = None, ref_model=None,
            tokenizer=None, evaluate: Callable[[object], dict] | None = None, progress: bool = True) -> PPOHistory:
    """Train a fresh policy with PPO and return its history (``history.evals``: iteration, gold, kl, score).

    policy_source: the starting policy, also the reference unless ``ref_model``: a Track (its SFT policy,
        ``models.load_sft_policy``) or a folder/Hub id (the model saved there).
    reward: ``"gold"`` (PPO against the true reward, the DPO paper's PPO-GT), a RewardModel
        (normalized here so the reference's samples score 0 +- 1), or a callable on a RolloutBatch.
        A reward model (or a ``ModelReward``) also starts the value model, as in notebook 04;
        otherwise the value is a head on the policy that starts at zero.
    config: e.g. ``PPOConfig.for_track(track, kl_coef=0.1)``. Seeded by ``config.seed`` without
        touching the caller's random state.
    evaluate(policy) -> {"gold", "kl", ...}: default, ``evaluation.evaluate_policy`` on the first
        ``config.eval_prompts`` held-out prompts.
    """
    tokenizer = tokenizer or load_tokenizer(policy_source)
    device = getattr(policy_source, "device", None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        base = (load_sft_policy(policy_source, device=device) if hasattr(policy_source, "name")
                else load_policy(policy_source, device=device))
        ref_model = ref_model if ref_model is not None else frozen_copy(base)
        track = policy_source if hasattr(policy_source, "name") else None
        prompts = load_prompts("train", track)
        gold = None
        if evaluate is None or isinstance(reward, str):
            gold = load_gold()
        if isinstance(reward, str):
            if reward != "gold":
                raise ValueError(f"reward must be 'gold', a RewardModel or a callable, not {reward!r}")
            reward_fn = TextReward(gold)
        elif isinstance(reward, torch.nn.Module):
            reward_fn = normalize_reward(model_reward(reward), ref_model, tokenizer, prompts, config)
        else:
            reward_fn = reward
        # A reward model also starts the value model (TRL's layout); the gold has no network to copy: a value head.
        policy = PolicyWithValue.around(base, reward_fn if isinstance(reward_fn, ModelReward) else None)
        if evaluate is None:
            evaluate = default_evaluator(ref_model, tokenizer, gold, config, track=track)
        return train_ppo(policy, ref_model, tokenizer, reward_fn, prompts, config, fns=fns,
                         evaluate=evaluate, progress=progress)


def default_evaluator(ref_model, tokenizer, gold, config: PPOConfig, track=None) -> Callable[[object], dict]:
    """evaluate(policy) -> {"gold", "kl"} on the first ``config.eval_prompts`` held-out prompts (temperature 1).

    ``track``: the prompts are encoded with that track's tokenizer (None: the stored tiny-track ids)."""
    test_prompts = load_prompts("test", track)

    def evaluate(policy) -> dict:
        return evaluate_policy(policy, ref_model, tokenizer, gold, test_prompts, n=config.eval_prompts,
                               max_new_tokens=config.max_new_tokens, seed=config.seed)

    return evaluate
