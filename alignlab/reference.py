"""The course's reference implementation of every exercise (the contracts: docs/conventions.md).

Pure functions of tensors, one per exercise, with the exercise's own name and
signature; later notebooks import them. Shared conventions:

- B = batch, T = sequence length, V = vocabulary; masks are 1 on entries that count.
- Computation happens in at least float32: float16/bfloat16 (and integer)
  inputs are upcast to float32, float64 stays float64.
- Sequence log-probs are sums over completion tokens, not means, unless ``average=True``.
- ``completion_mask`` is aligned with ``input_ids``: ``token_logps[:, t]`` scores
  token t+1, so it is weighted by ``completion_mask[:, t+1]``.
- Variances (whitening, GRPO) are unbiased (divide by n - 1).
- Losses use ``logsigmoid``, which stays finite for any gap; implicit DPO rewards are detached.
- A wrong shape raises ValueError saying what is expected.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

WHITEN_EPS = 1e-8  # added to the variance in masked_whiten


# ----------------------------------------------------------------- helpers
def _float(x) -> Tensor:
    """``x`` as a tensor in at least float32 (float64 stays float64)."""
    x = torch.as_tensor(x)
    return x if x.dtype == torch.float64 else x.float()


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _same_1d(fn: str, **tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    first = next(iter(shapes.values()))
    _expect(len(first) == 1 and all(s == first for s in shapes.values()),
            f"{fn}: expected tensors of the same shape (B,), got {shapes}")


def _same_2d(fn: str, **tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    first = next(iter(shapes.values()))
    _expect(len(first) == 2 and all(s == first for s in shapes.values()),
            f"{fn}: expected tensors of the same shape (B, T), got {shapes}")


# ------------------------------------------------- 00 getting started
def log_softmax(logits: Tensor) -> Tensor:
    """Log-softmax along the last dimension, stable for large logits.

    Shapes: (..., V) -> (..., V), in at least float32.
    Convention: subtract the row maximum before exponentiating, so exp never overflows.
    Naive equivalent: ``torch.log(torch.softmax(logits, -1))`` (which overflows to nan/-inf).
    """
    logits = _float(logits)
    shifted = logits - logits.amax(dim=-1, keepdim=True)           # (..., V), max is 0
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()  # (..., V)


# ------------------------------------------------- 01 preference data
def bradley_terry_probability(reward_a: Tensor, reward_b: Tensor) -> Tensor:
    """P(a preferred over b) = sigmoid(r_a - r_b), elementwise with broadcasting.

    Naive equivalent: ``exp(r_a) / (exp(r_a) + exp(r_b))`` (which overflows for large rewards).
    """
    return torch.sigmoid(_float(reward_a) - _float(reward_b))


def token_logprobs(logits: Tensor, input_ids: Tensor) -> Tensor:
    """Log-probability of each next token: entry t is log p(x[t+1] | x[..t]).

    Shapes: logits (B, T, V), input_ids (B, T) -> (B, T-1), in at least float32.
    Convention: the shift happens inside (logits at t predict the token at t+1).
    Naive equivalent: ``log_softmax(logits[:, :-1].float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)``.
    """
    _expect(logits.dim() == 3 and input_ids.shape == logits.shape[:2],
            f"token_logprobs: expected logits (B, T, V) and input_ids (B, T), "
            f"got {tuple(logits.shape)} and {tuple(input_ids.shape)}")
    logits = _float(logits[:, :-1])                                   # (B, T-1, V)
    targets = input_ids[:, 1:].long().unsqueeze(-1)                  # (B, T-1, 1)
    picked = logits.gather(-1, targets).squeeze(-1)                   # (B, T-1)
    return picked - torch.logsumexp(logits, dim=-1)                   # (B, T-1)


def sequence_logprob(token_logps: Tensor, completion_mask: Tensor, average: bool = False) -> Tensor:
    """Log-probability of each completion: the sum (or mean) of its token log-probs.

    Shapes: token_logps (B, T-1), completion_mask (B, T) -> (B,).
    Convention: the mask is aligned with input_ids, so ``token_logps[:, t]`` is
    weighted by ``completion_mask[:, t+1]``. Sum unless ``average=True``; a row
    without completion tokens sums to 0 and raises ValueError when averaged.
    Naive equivalent: ``(token_logps * completion_mask[:, 1:]).sum(-1)``.
    """
    _expect(token_logps.dim() == 2 and completion_mask.shape == (token_logps.shape[0], token_logps.shape[1] + 1),
            f"sequence_logprob: expected token_logps (B, T-1) and completion_mask (B, T), "
            f"got {tuple(token_logps.shape)} and {tuple(completion_mask.shape)}")
    token_logps = _float(token_logps)
    mask = completion_mask[:, 1:].to(token_logps.dtype)             # (B, T-1), aligned with token_logps
    total = (token_logps * mask).sum(dim=-1)                         # (B,)
    if not average:
        return total
    count = mask.sum(dim=-1)                                          # (B,)
    _expect(bool((count > 0).all()), "sequence_logprob: average=True needs at least one completion token per row")
    return total / count


def sft_loss(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> Tensor:
    """Supervised fine-tuning loss: the mean negative log-likelihood of the completion tokens of a batch.

    Shapes: logits (B, T, V), input_ids (B, T), completion_mask (B, T) -> (), in at least float32.
    Conventions:
    - the shift happens inside: the logits at t predict ``input_ids[:, t+1]``;
    - the mask is aligned with ``input_ids`` (1 on completion tokens, a final EOS included; 0 on
      prompt and padding), so the prediction at t is weighted by ``completion_mask[:, t+1]``, the
      mask of its target (``completion_mask[:, 0]`` never counts: no logit predicts the first token);
    - a token mean over the whole batch: the sum over every completion token of -log p, divided by
      the number of completion tokens (not a mean of per-sequence means, so a long completion
      weighs more than a short one, as in TRL's SFTTrainer);
    - log-softmax (logits minus logsumexp), finite for logits in the thousands;
    - a mask with no completion token (after the first column) raises ValueError: there is nothing to average.
    Naive equivalent: ``F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)``
    with ``labels = input_ids.masked_fill(completion_mask == 0, -100)``.
    """
    _expect(logits.dim() == 3 and input_ids.shape == logits.shape[:2] and completion_mask.shape == input_ids.shape,
            f"sft_loss: expected logits (B, T, V), input_ids (B, T) and completion_mask (B, T), got "
            f"{tuple(logits.shape)}, {tuple(input_ids.shape)} and {tuple(completion_mask.shape)}")
    logits = _float(logits[:, :-1])                                   # (B, T-1, V): the logits at t predict t+1
    targets = input_ids[:, 1:].long().unsqueeze(-1)                  # (B, T-1, 1)
    token_logps = logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)   # (B, T-1)
    mask = completion_mask[:, 1:] != 0                               # (B, T-1): the mask of each target token
    count = mask.sum()
    _expect(bool(count > 0), "sft_loss: the completion mask has no completion token (after the first column): "
                             "there is nothing to average")
    return -torch.where(mask, token_logps, torch.zeros_like(token_logps)).sum() / count


# ------------------------------------------------- 02 reward model
def last_token_index(attention_mask: Tensor) -> Tensor:
    """Position of the last 1 in each row, for right and left padding alike.

    Shapes: attention_mask (B, T) -> (B,) long. A row without a 1 raises ValueError.
    Naive equivalent: ``[max(t for t in range(T) if mask[b, t]) for b in range(B)]``.
    """
    _expect(attention_mask.dim() == 2, f"last_token_index: expected attention_mask (B, T), got {tuple(attention_mask.shape)}")
    present = attention_mask != 0                                     # (B, T)
    _expect(bool(present.any(dim=-1).all()), "last_token_index: every row of attention_mask needs at least one 1")
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (T,)
    return torch.where(present, positions, -1).amax(dim=-1)           # (B,) long


def pairwise_reward_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, margin=None) -> Tensor:
    """Bradley-Terry loss of a reward model: mean of -log sigmoid(r_c - r_r - margin).

    Shapes: chosen_rewards (B,), rejected_rewards (B,), margin None, a float or (B,) -> ().
    Convention: ``logsigmoid`` keeps loss and gradient finite for gaps of 1e4.
    Naive equivalent: ``-torch.log(torch.sigmoid(r_c - r_r - margin)).mean()`` (inf for large negative gaps).
    """
    _same_1d("pairwise_reward_loss", chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
    gap = _float(chosen_rewards) - _float(rejected_rewards)          # (B,)
    if margin is not None:
        gap = gap - _float(margin)
    return -F.logsigmoid(gap).mean()


def best_of_n_kl(n: int) -> float:
    """The analytic KL of best-of-n sampling from its base policy: log n - (n-1)/n, in nats.

    It is exact for continuous rewards without ties and an upper bound in general. n < 1 raises ValueError.
    """
    _expect(n >= 1, f"best_of_n_kl: n must be at least 1, got {n}")
    return float(math.log(n) - (n - 1) / n)


# ------------------------------------------------- policy gradients (REINFORCE, RLOO, entropy)
def reinforce_loss(logprobs: Tensor, rewards: Tensor, mask: Tensor, baseline=None) -> Tensor:
    """REINFORCE's loss: minus the batch mean of (reward - baseline) times each sequence's summed log-prob.

    Shapes: logprobs, mask (B, T); rewards (B,); baseline None (0), a number or (B,) -> loss ().
    Convention: log-probs are summed over the masked tokens of a row, not averaged; the weights
    (rewards - baseline) are constants, so no gradient reaches rewards or baseline.
    Naive equivalent: ``-((rewards - baseline).detach() * (logprobs * mask).sum(-1)).mean()``.
    """
    _same_2d("reinforce_loss", logprobs=logprobs, mask=mask)
    _expect(rewards.shape == logprobs.shape[:1],
            f"reinforce_loss: expected rewards ({logprobs.shape[0]},), got {tuple(rewards.shape)}")
    logprobs, weights = _float(logprobs), _float(rewards)
    if baseline is not None:
        baseline = _float(baseline)
        _expect(baseline.dim() == 0 or baseline.shape == rewards.shape,
                f"reinforce_loss: expected baseline None, a number or ({logprobs.shape[0]},), got {tuple(baseline.shape)}")
        weights = weights - baseline
    dtype = torch.promote_types(logprobs.dtype, weights.dtype)
    weights = weights.detach().to(dtype)                             # (B,) constants: the advantage of each row
    sequence = (logprobs.to(dtype) * mask.to(dtype)).sum(-1)          # (B,) log pi(y | x), summed over tokens
    return -(weights * sequence).mean()


def rloo_advantages(rewards: Tensor) -> Tensor:
    """REINFORCE leave-one-out: each reward minus the mean reward of the other G - 1 samples of its group.

    Shapes: rewards (P, G), G samples for each of P prompts -> (P, G). G < 2 raises ValueError
    (a sample needs at least one other sample of its prompt).
    Naive equivalent: ``r - (r.sum(1, keepdim=True) - r) / (G - 1)``, which also equals G / (G - 1) * (r - mean).
    """
    _expect(rewards.dim() == 2, f"rloo_advantages: expected rewards (P, G), got {tuple(rewards.shape)}")
    G = rewards.shape[1]
    _expect(G >= 2, f"rloo_advantages: each group needs at least G = 2 samples (leave one out), got G = {G}")
    rewards = _float(rewards)
    others = (rewards.sum(dim=1, keepdim=True) - rewards) / (G - 1)   # (P, G) mean of the other samples
    return rewards - others


def token_entropy(logits: Tensor, mask: Tensor) -> Tensor:
    """Entropy (in nats) of the next-token distribution at each position: -sum_v p log p, p = softmax(logits).

    Shapes: logits (B, T, V), mask (B, T) -> (B, T), in at least float32, 0 where mask is 0.
    Convention: computed from log_softmax (which subtracts the maximum), so logits in the thousands stay accurate.
    Naive equivalent: ``p = softmax(logits); -(p * log(p)).sum(-1) * mask`` (nan once some p underflows to 0).
    """
    _expect(logits.dim() == 3 and mask.shape == logits.shape[:2],
            f"token_entropy: expected logits (B, T, V) and mask (B, T), got {tuple(logits.shape)} and {tuple(mask.shape)}")
    logp = torch.log_softmax(_float(logits), dim=-1)                  # (B, T, V)
    entropy = -(logp.exp() * logp).sum(dim=-1)                        # (B, T)
    return entropy * mask.to(entropy.dtype)


# ------------------------------------------------- 04 RLHF with PPO
def kl_penalized_rewards(scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token RLHF reward: -kl_coef * (log pi - log pi_ref) on masked tokens, plus the score at the last one.

    Shapes: scores (B,), logprobs / ref_logprobs / mask (B, T) -> (B, T), 0 outside the mask.
    Convention: each row's score is added at its last masked token (the EOS), found as in ``last_token_index``.
    Naive equivalent: ``r = -kl_coef * (lp - ref) * mask; r[b, last[b]] += scores[b]`` for each row b.
    """
    _same_2d("kl_penalized_rewards", logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    _expect(scores.shape == logprobs.shape[:1], f"kl_penalized_rewards: expected scores (B,) = {tuple(logprobs.shape[:1])}, got {tuple(scores.shape)}")
    logprobs, ref_logprobs = _float(logprobs), _float(ref_logprobs)
    m = mask.to(logprobs.dtype)                                       # (B, T)
    rewards = -kl_coef * (logprobs - ref_logprobs) * m                # (B, T)
    last = F.one_hot(last_token_index(mask), mask.shape[1]).to(logprobs.dtype)  # (B, T)
    return rewards + _float(scores).to(logprobs.dtype)[:, None] * last


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of the entries of x where mask is 1.

    Shapes: x and mask of the same shape -> (). An all-zero mask raises ValueError.
    Naive equivalent: ``x[mask.bool()].mean()``.
    """
    _expect(x.shape == mask.shape, f"masked_mean: expected x and mask of the same shape, got {tuple(x.shape)} and {tuple(mask.shape)}")
    x = _float(x)
    m = mask.to(x.dtype)
    count = m.sum()
    _expect(bool(count > 0), "masked_mean: the mask is all zeros, so there is nothing to average")
    return (x * m).sum() / count


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Whiten x over its masked entries: (x - mean) / sqrt(var + 1e-8), unbiased variance.

    Shapes: x and mask of the same shape -> same shape, 0 outside the mask.
    Convention: with ``shift_mean=False`` the mean is added back (only the scale changes).
    Fewer than two masked entries raise ValueError (the unbiased variance needs two).
    Naive equivalent: ``v = x[mask.bool()]; (v - v.mean()) / (v.var() + 1e-8).sqrt()`` put back in place.
    """
    mean = masked_mean(x, mask)                                       # (), checks shapes
    x = _float(x)
    m = mask.to(x.dtype)
    count = m.sum()
    _expect(bool(count > 1), "masked_whiten: the unbiased variance needs at least two masked entries")
    var = (((x - mean) ** 2) * m).sum() / (count - 1)                 # (), unbiased
    whitened = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * m


def gae_advantages(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation over each row's masked span.

    Shapes: rewards, values, mask (B, T) -> (advantages (B, T), returns (B, T)), 0 outside the mask.
    Convention: delta_t = r_t + gamma * V_{t+1} - V_t with V_{t+1} = 0 after the row's
    last masked token (no bootstrapping from padding); A_t = delta_t + gamma * lam * A_{t+1};
    returns = advantages + values. The masked span of a row is contiguous.
    Naive equivalent: the same recursion in a Python loop over rows and steps.
    """
    _same_2d("gae_advantages", rewards=rewards, values=values, mask=mask)
    dtype = torch.promote_types(_float(rewards).dtype, _float(values).dtype)
    rewards, values = rewards.to(dtype), values.to(dtype)
    m = mask.to(dtype)                                                # (B, T)
    values = values * m                                               # padding carries no value
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)                            # (B, T)
    next_advantage = torch.zeros_like(rewards[:, 0])                  # (B,)
    next_value = torch.zeros_like(rewards[:, 0])                      # (B,)
    for t in reversed(range(T)):                                      # vectorized over the batch
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * m[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, (advantages + values) * m


def ppo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                    clip_range: float) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate loss and the share of tokens where clipping is active.

    Shapes: all (B, T) -> (loss (), clip_fraction ()).
    Convention: ratio = exp(logprobs - old_logprobs); loss = masked mean of
    max(-A * ratio, -A * clip(ratio, 1-c, 1+c)); clip_fraction = masked mean of
    (clipped term strictly larger), detached.
    """
    _same_2d("ppo_policy_loss", logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    logprobs, old_logprobs, advantages = _float(logprobs), _float(old_logprobs), _float(advantages)
    ratio = torch.exp(logprobs - old_logprobs)                        # (B, T)
    pg_losses = -advantages * ratio                                   # (B, T)
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = masked_mean(torch.maximum(pg_losses, pg_losses_clipped), mask)
    clip_fraction = masked_mean((pg_losses_clipped > pg_losses).to(loss.dtype), mask).detach()
    return loss, clip_fraction


def ppo_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float) -> Tensor:
    """PPO's clipped value loss: 0.5 * masked mean of max((v - R)^2, (v_clipped - R)^2).

    Shapes: all (B, T) -> ().
    Convention: v_clipped = old_values + clip(values - old_values, -c, c); the 0.5 is part of the loss.
    """
    _same_2d("ppo_value_loss", values=values, old_values=old_values, returns=returns, mask=mask)
    values, old_values, returns = _float(values), _float(old_values), _float(returns)
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)  # (B, T)
    losses = torch.maximum((values - returns) ** 2, (values_clipped - returns) ** 2)        # (B, T)
    return 0.5 * masked_mean(losses, mask)


# ------------------------------------------------- 05 DPO
def concatenated_pair_logps(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Summed completion log-probs of the chosen and rejected halves of a concatenated pair batch.

    Shapes: logits (2B, T, V), input_ids (2B, T), completion_mask (2B, T) ->
    (chosen_logps (B,), rejected_logps (B,)), in at least float32.
    Conventions:
    - rows 0..B-1 are the chosen completions and rows B..2B-1 the rejected ones of the same B pairs
      (DPO trainers run both halves in one forward pass), right-padded to a common width T;
    - the shift happens inside: the logits at t predict ``input_ids[:, t+1]``;
    - the mask is aligned with ``input_ids`` (1 on completion tokens, a final EOS included; 0 on prompt
      and padding), so the prediction at t counts when ``completion_mask[:, t+1]`` is 1;
    - each result is the SUM over the row's completion tokens of log p(token | prefix) (not a mean);
      a row without completion tokens gives 0; log-softmax, finite for logits in the thousands;
      what the padding holds never changes a result.
    Naive equivalent: ``logps = sequence_logprob(token_logprobs(logits, input_ids), completion_mask)``,
    then ``logps[:B], logps[B:]``.
    """
    _expect(logits.dim() == 3 and input_ids.shape == logits.shape[:2] and completion_mask.shape == input_ids.shape
            and logits.shape[0] % 2 == 0 and logits.shape[0] > 0,
            f"concatenated_pair_logps: expected logits (2B, T, V), input_ids (2B, T) and completion_mask (2B, T) "
            f"with an even number of rows, got {tuple(logits.shape)}, {tuple(input_ids.shape)} and "
            f"{tuple(completion_mask.shape)}")
    token_logps = token_logprobs(logits, input_ids)                   # (2B, T-1): the logits at t predict t+1
    mask = completion_mask[:, 1:] != 0                               # (2B, T-1): the mask of each target token
    logps = torch.where(mask, token_logps, torch.zeros_like(token_logps)).sum(dim=-1)        # (2B,)
    B = logps.shape[0] // 2
    return logps[:B], logps[B:]                                       # (B,), (B,)


def dpo_logits(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
               ref_chosen_logps: Tensor, ref_rejected_logps: Tensor) -> Tensor:
    """The DPO log-ratio difference h = (pc - rc) - (pr - rr).

    Shapes: four (B,) summed sequence log-probs -> (B,).
    Convention: the reference log-probs are constants (detached): no gradient reaches the reference.
    """
    _same_1d("dpo_logits", policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
             ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
    chosen = _float(policy_chosen_logps) - _float(ref_chosen_logps).detach()        # (B,) log pi/pi_ref on y_w
    rejected = _float(policy_rejected_logps) - _float(ref_rejected_logps).detach()  # (B,) log pi/pi_ref on y_l
    return chosen - rejected


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
             ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """DPO loss = mean of -log sigmoid(beta * h), with the implicit rewards.

    Shapes: four (B,) summed sequence log-probs -> (loss (), chosen_rewards (B,), rejected_rewards (B,)).
    Convention: implicit rewards beta * (policy - ref) log-probs, detached; ``logsigmoid`` keeps it stable.
    Naive equivalent: ``-torch.log(torch.sigmoid(beta * h)).mean()``.
    """
    h = dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)  # (B,)
    loss = -F.logsigmoid(beta * h).mean()
    chosen_rewards = beta * (_float(policy_chosen_logps) - _float(ref_chosen_logps)).detach()
    rejected_rewards = beta * (_float(policy_rejected_logps) - _float(ref_rejected_logps)).detach()
    return loss, chosen_rewards, rejected_rewards


def dpo_preference_probability(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
                               ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float) -> Tensor:
    """The probability that the policy implies chosen is preferred: sigmoid(beta * h). Shapes: four (B,) -> (B,)."""
    return torch.sigmoid(beta * dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps))


def dpo_gradient_weight(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
                        ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float) -> Tensor:
    """Per-pair weight of the DPO gradient: sigmoid(rejected_reward - chosen_reward) = sigmoid(-beta * h).

    Shapes: four (B,) -> (B,). Large when the implicit reward orders the pair wrongly.
    """
    return torch.sigmoid(-beta * dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps))


# ------------------------------------------------- 06 beyond DPO
def cdpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
              ref_rejected_logps: Tensor, beta: float, label_smoothing: float) -> Tensor:
    """Conservative DPO: mean of -(1-e) log sigmoid(beta h) - e log sigmoid(-beta h), e = label_smoothing.

    Shapes: four (B,) -> (). With e = 0 it is the DPO loss.
    """
    h = dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)  # (B,)
    e = label_smoothing
    return (-(1 - e) * F.logsigmoid(beta * h) - e * F.logsigmoid(-beta * h)).mean()


def ipo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
             ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, tau: float) -> Tensor:
    """IPO: mean of (h - 1/(2 tau))^2 with h = dpo_logits of summed log-probs (the paper's form).

    Shapes: four (B,) -> (). Minimal where h = 1/(2 tau). TRL divides each log-ratio
    by the completion length first; that is a different loss.
    """
    h = dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)  # (B,)
    return ((h - 1 / (2 * tau)) ** 2).mean()


def simpo_loss(policy_chosen_avg_logps: Tensor, policy_rejected_avg_logps: Tensor, beta: float, gamma: float) -> Tensor:
    """SimPO: mean of -log sigmoid(beta * (avg_c - avg_r) - gamma); no reference model.

    Shapes: two (B,) length-averaged log-probs -> (). gamma is the target margin, outside beta.
    """
    _same_1d("simpo_loss", policy_chosen_avg_logps=policy_chosen_avg_logps, policy_rejected_avg_logps=policy_rejected_avg_logps)
    gap = _float(policy_chosen_avg_logps) - _float(policy_rejected_avg_logps)  # (B,)
    return -F.logsigmoid(beta * gap - gamma).mean()


def group_relative_advantages(rewards: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO advantages: (r - group mean) / (group unbiased std + eps), one group per prompt.

    Shapes: rewards (P, G), G samples for each of P prompts -> (P, G). G = 1 raises ValueError.
    Naive equivalent: ``(r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + eps)``.
    """
    _expect(rewards.dim() == 2, f"group_relative_advantages: expected rewards (P, G), got {tuple(rewards.shape)}")
    _expect(rewards.shape[1] >= 2, "group_relative_advantages: each group needs at least G = 2 samples (unbiased std)")
    rewards = _float(rewards)
    mean = rewards.mean(dim=1, keepdim=True)                          # (P, 1)
    std = rewards.std(dim=1, keepdim=True, correction=1)             # (P, 1)
    return (rewards - mean) / (std + eps)


# ------------------------------------------------- 07 RL with verifiable rewards
def kl_estimators(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Schulman's per-token estimators of KL(policy || reference) from tokens sampled by the policy.

    Shapes: all (B, T) -> (k1, k2, k3), each (B, T), 0 outside the mask.
    Convention: log_ratio = ref_logprobs - logprobs; k1 = -log_ratio; k2 = 0.5 * log_ratio ** 2;
    k3 = (exp(log_ratio) - 1) - log_ratio (never negative).
    """
    _same_2d("kl_estimators", logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    logprobs, ref_logprobs = _float(logprobs), _float(ref_logprobs)
    m = mask.to(logprobs.dtype)
    log_ratio = (ref_logprobs - logprobs) * m                          # (B, T), 0 outside the mask
    k1 = -log_ratio
    k2 = 0.5 * log_ratio ** 2
    k3 = (torch.exp(log_ratio) - 1) - log_ratio
    return k1 * m, k2 * m, k3 * m


GRPO_AGGREGATIONS = ("sequence_mean", "token_mean", "constant")


def grpo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                     clip_range: float, aggregation: str = "sequence_mean") -> Tensor:
    """GRPO's clipped surrogate with one advantage per sequence, aggregated three ways.

    Shapes: logprobs, old_logprobs, mask (B, T); advantages (B,) -> loss ().
    Per token: l = max(-A * ratio, -A * clip(ratio, 1-c, 1+c)), ratio = exp(logprobs - old_logprobs).
    aggregation "sequence_mean" (GRPO): mean over rows of each row's masked mean;
    "token_mean" (DAPO): sum of l * mask / sum of mask; "constant" (Dr. GRPO): sum of l * mask / (B * T).
    A row whose mask is all zero (no completion tokens) contributes 0 to "sequence_mean": its token count
    is clamped at 1, as TRL does (it still counts as a row in the mean over rows).
    Any other aggregation raises ValueError.
    """
    _same_2d("grpo_policy_loss", logprobs=logprobs, old_logprobs=old_logprobs, mask=mask)
    _expect(advantages.dim() == 1 and advantages.shape[0] == logprobs.shape[0],
            f"grpo_policy_loss: expected advantages ({logprobs.shape[0]},), got {tuple(advantages.shape)}")
    _expect(aggregation in GRPO_AGGREGATIONS, f"grpo_policy_loss: aggregation must be one of {GRPO_AGGREGATIONS}, got {aggregation!r}")
    logprobs, old_logprobs, advantages = _float(logprobs), _float(old_logprobs), _float(advantages)
    m = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)                        # (B, T)
    adv = advantages[:, None]                                         # (B, 1)
    losses = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)) * m
    if aggregation == "sequence_mean":
        return (losses.sum(1) / m.sum(1).clamp(min=1)).mean()     # an all-masked row: 0 / 1 = 0, not NaN
    if aggregation == "token_mean":
        return losses.sum() / m.sum()
    return losses.sum() / (m.shape[0] * m.shape[1])


__all__ = [
    "log_softmax", "bradley_terry_probability", "token_logprobs", "sequence_logprob", "sft_loss",
    "last_token_index", "pairwise_reward_loss", "best_of_n_kl",
    "reinforce_loss", "rloo_advantages", "token_entropy",
    "kl_penalized_rewards", "masked_mean", "masked_whiten", "gae_advantages", "ppo_policy_loss", "ppo_value_loss",
    "concatenated_pair_logps", "dpo_logits", "dpo_loss", "dpo_preference_probability", "dpo_gradient_weight",
    "cdpo_loss", "ipo_loss", "simpo_loss", "group_relative_advantages",
    "kl_estimators", "grpo_policy_loss",
]
