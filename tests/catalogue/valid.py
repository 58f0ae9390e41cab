"""Valid alternatives: different but correct code for every exercise; each must keep its points.

``VALID = {exercise: [(name, fn), ...]}``. Same scheme as ``wrong.py``.
Alternatives may call the reference versions of *earlier* exercises (docs/conventions.md, What a notebook imports).
"""
import math

import torch
import torch.nn.functional as F

from . import register

VALID: dict = {}


def valid(exercise, name):
    return register(VALID, exercise, name)


# ============================================================ log_softmax
@valid("log_softmax", "logsumexp")
def log_softmax__logsumexp(logits):
    logits = logits.float() if logits.dtype != torch.float64 else logits
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)


@valid("log_softmax", "float64 then back")
def log_softmax__float64(logits):
    x = logits.double()
    m = x.max(dim=-1, keepdim=True).values
    out = x - m - torch.log(torch.exp(x - m).sum(dim=-1, keepdim=True))
    return out if logits.dtype == torch.float64 else out.float()


# ============================================================ bradley_terry_probability
@valid("bradley_terry_probability", "one minus sigmoid of the reverse gap")
def bradley_terry_probability__complement(reward_a, reward_b):
    return 1 - torch.sigmoid(reward_b - reward_a)


@valid("bradley_terry_probability", "exp of logsigmoid")
def bradley_terry_probability__exp_logsigmoid(reward_a, reward_b):
    return torch.exp(F.logsigmoid(reward_a - reward_b))


# ============================================================ token_logprobs
@valid("token_logprobs", "one-hot instead of gather")
def token_logprobs__one_hot(logits, input_ids):
    logps = torch.log_softmax(logits[:, :-1].to(torch.float32 if logits.dtype != torch.float64 else torch.float64), dim=-1)
    one_hot = F.one_hot(input_ids[:, 1:], logits.shape[-1]).to(logps.dtype)
    return (logps * one_hot).sum(-1)


@valid("token_logprobs", "selected logit minus logsumexp")
def token_logprobs__logsumexp(logits, input_ids):
    logits = logits.float() if logits.dtype != torch.float64 else logits
    next_ids = input_ids.roll(-1, dims=1)                      # next_ids[:, t] = input_ids[:, t+1]
    selected = torch.gather(logits, 2, next_ids.unsqueeze(-1)).squeeze(-1)
    return (selected - torch.logsumexp(logits, dim=-1))[:, :-1]


# ============================================================ sequence_logprob
@valid("sequence_logprob", "torch.where instead of multiplying")
def sequence_logprob__where(token_logps, completion_mask, average=False):
    keep = completion_mask[:, 1:].bool()
    total = torch.where(keep, token_logps, torch.zeros_like(token_logps)).sum(-1)
    return total / keep.sum(-1) if average else total


@valid("sequence_logprob", "einsum")
def sequence_logprob__einsum(token_logps, completion_mask, average=False):
    mask = completion_mask[:, 1:].to(token_logps.dtype)
    total = torch.einsum("bt,bt->b", token_logps, mask)
    if average:
        total = total / mask.sum(-1)
    return total


# ============================================================ sft_loss
@valid("sft_loss", "cross_entropy with ignore_index=-100 labels")
def sft_loss__cross_entropy(logits, input_ids, completion_mask):
    labels = input_ids.masked_fill(completion_mask == 0, -100)[:, 1:]      # the target of the logits at t is token t+1
    if (labels == -100).all():
        raise ValueError("sft_loss: no completion token to average over")
    logits = logits[:, :-1]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


@valid("sft_loss", "gather of log_softmax, boolean indexing")
def sft_loss__gather(logits, input_ids, completion_mask):
    logits = logits if logits.dtype == torch.float64 else logits.float()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, input_ids[:, 1:].unsqueeze(2)).squeeze(2)
    keep = completion_mask[:, 1:].bool()
    if not bool(keep.any()):
        raise ValueError("sft_loss: the completion mask is empty")
    return -logps[keep].mean()


# ============================================================ last_token_index
@valid("last_token_index", "flip and argmax")
def last_token_index__flip(attention_mask):
    if not bool((attention_mask != 0).any(-1).all()):
        raise ValueError("every row needs at least one 1")
    T = attention_mask.shape[1]
    return T - 1 - (attention_mask != 0).long().flip(-1).argmax(-1)


@valid("last_token_index", "python loop")
def last_token_index__loop(attention_mask):
    out = []
    for row in attention_mask.tolist():
        ones = [t for t, v in enumerate(row) if v]
        if not ones:
            raise ValueError("every row needs at least one 1")
        out.append(ones[-1])
    return torch.tensor(out, dtype=torch.long)


# ============================================================ pairwise_reward_loss
@valid("pairwise_reward_loss", "softplus form")
def pairwise_reward_loss__softplus(chosen_rewards, rejected_rewards, margin=None):
    gap = chosen_rewards - rejected_rewards
    if margin is not None:
        gap = gap - margin
    return F.softplus(-gap).mean()


@valid("pairwise_reward_loss", "float64")
def pairwise_reward_loss__float64(chosen_rewards, rejected_rewards, margin=None):
    gap = chosen_rewards.double() - rejected_rewards.double() - (0.0 if margin is None else margin)
    loss = -F.logsigmoid(gap).mean()
    return loss if chosen_rewards.dtype == torch.float64 else loss.float()


# ============================================================ best_of_n_kl
@valid("best_of_n_kl", "log n - 1 + 1/n")
def best_of_n_kl__rearranged(n):
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return math.log(n) - 1 + 1 / n


@valid("best_of_n_kl", "via torch")
def best_of_n_kl__torch(n):
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    n_ = torch.tensor(float(n), dtype=torch.float64)
    return float(torch.log(n_) - (n_ - 1) / n_)


# ============================================================ reinforce_loss (policy gradients)
@valid("reinforce_loss", "advantages built under no_grad, masked with where")
def reinforce_loss__no_grad(logprobs, rewards, mask, baseline=None):
    with torch.no_grad():
        advantages = rewards.to(torch.float64) - (0.0 if baseline is None else torch.as_tensor(baseline, dtype=torch.float64))
    sequence = torch.where(mask.bool(), logprobs.to(torch.float64), torch.zeros((), dtype=torch.float64)).sum(-1)
    return -(advantages * sequence).sum() / logprobs.shape[0]


@valid("reinforce_loss", "einsum over tokens")
def reinforce_loss__einsum(logprobs, rewards, mask, baseline=None):
    lp = logprobs.float() if logprobs.dtype != torch.float64 else logprobs
    b = torch.zeros_like(rewards) if baseline is None else baseline
    weights = (rewards - b).detach().to(lp.dtype)
    return -torch.einsum("b,bt,bt->", weights, lp, mask.to(lp.dtype)) / lp.shape[0]


# ============================================================ rloo_advantages (policy gradients)
@valid("rloo_advantages", "G / (G - 1) times the centred reward")
def rloo_advantages__scaled(rewards):
    G = rewards.shape[-1]
    if G < 2:
        raise ValueError("rloo_advantages needs G >= 2")
    rewards = rewards.float() if rewards.dtype != torch.float64 else rewards
    return G / (G - 1) * (rewards - rewards.mean(dim=-1, keepdim=True))


@valid("rloo_advantages", "a loop over the samples of each group")
def rloo_advantages__loop(rewards):
    P, G = rewards.shape
    if G < 2:
        raise ValueError("rloo_advantages needs G >= 2")
    columns = []
    for i in range(G):
        others = torch.cat([rewards[:, :i], rewards[:, i + 1:]], dim=1)
        columns.append(rewards[:, i] - others.mean(dim=1))
    return torch.stack(columns, dim=1)


# ============================================================ token_entropy (policy gradients)
@valid("token_entropy", "logsumexp minus the expected logit")
def token_entropy__logsumexp(logits, mask):
    x = logits.float() if logits.dtype != torch.float64 else logits
    x = x - x.amax(dim=-1, keepdim=True)            # centred first: no cancellation for logits in the thousands
    p = torch.softmax(x, dim=-1)
    return (torch.logsumexp(x, dim=-1) - (p * x).sum(-1)) * mask.to(x.dtype)


@valid("token_entropy", "torch.special.entr of the softmax")
def token_entropy__entr(logits, mask):
    x = logits.float() if logits.dtype != torch.float64 else logits
    return torch.special.entr(torch.softmax(x, dim=-1)).sum(-1) * mask.to(x.dtype)


# ============================================================ kl_penalized_rewards
@valid("kl_penalized_rewards", "scatter_add at the last index")
def kl_penalized_rewards__scatter(scores, logprobs, ref_logprobs, mask, kl_coef):
    m = mask.to(logprobs.dtype)
    rewards = -kl_coef * (logprobs - ref_logprobs) * m
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    last = torch.where(mask.bool(), positions, -1).max(-1).values
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


@valid("kl_penalized_rewards", "loop over rows")
def kl_penalized_rewards__loop(scores, logprobs, ref_logprobs, mask, kl_coef):
    rewards = torch.where(mask.bool(), -kl_coef * (logprobs - ref_logprobs), torch.zeros_like(logprobs))
    bonus = torch.zeros_like(rewards)
    for b in range(mask.shape[0]):
        last = int(mask[b].nonzero().max())
        bonus[b, last] = scores[b]
    return rewards + bonus


# ============================================================ masked_mean
@valid("masked_mean", "boolean indexing")
def masked_mean__indexing(x, mask):
    keep = mask.bool()
    if not bool(keep.any()):
        raise ValueError("the mask is all zeros")
    return x[keep].mean()


@valid("masked_mean", "torch.where and a ratio")
def masked_mean__where(x, mask):
    count = (mask != 0).sum()
    if count == 0:
        raise ValueError("masked_mean needs at least one entry in the mask")
    return torch.where(mask != 0, x, torch.zeros_like(x)).sum() / count


# ============================================================ masked_whiten
@valid("masked_whiten", "boolean indexing and torch.var")
def masked_whiten__indexing(x, mask, shift_mean=True):
    keep = mask.bool()
    selected = x[keep]
    mean, var = selected.mean(), selected.var(correction=1)
    out = (x - mean) / torch.sqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return torch.where(keep, out, torch.zeros_like(out))


@valid("masked_whiten", "float64")
def masked_whiten__float64(x, mask, shift_mean=True):
    x64, m = x.double(), mask.double()
    n = m.sum()
    mean = (x64 * m).sum() / n
    var = ((x64 - mean) ** 2 * m).sum() / (n - 1)
    out = (x64 - mean) / (var + 1e-8).sqrt() + (0 if shift_mean else mean)
    out = out * m
    return out if x.dtype == torch.float64 else out.float()


@valid("masked_whiten", "TRL's form: values outside the mask left as computed (not graded)")
def masked_whiten__trl(x, mask, shift_mean=True):
    mask = mask.to(x.dtype)
    mean = (x * mask).sum() / mask.sum()
    var = ((x - mean) ** 2 * mask).sum() / (mask.sum() - 1)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


# ============================================================ gae_advantages
@valid("gae_advantages", "loop over rows and steps")
def gae_advantages__loop(rewards, values, mask, gamma, lam):
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    for b in range(B):
        span = mask[b].nonzero().flatten().tolist()
        next_adv, next_value = 0.0, 0.0
        for t in reversed(span):
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            next_adv = delta + gamma * lam * next_adv
            advantages[b, t] = next_adv
            next_value = values[b, t]
    returns = torch.where(mask.bool(), advantages + values, torch.zeros_like(values))
    return advantages, returns


@valid("gae_advantages", "discount matrix")
def gae_advantages__matrix(rewards, values, mask, gamma, lam):
    m = mask.to(rewards.dtype)
    v = values * m
    next_v = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)
    deltas = (rewards + gamma * next_v - v) * m                            # (B, T)
    T = rewards.shape[1]
    t = torch.arange(T)
    power = (t[None, :] - t[:, None]).clamp(min=0).to(rewards.dtype)       # (T, T): k - t
    discount = torch.where(t[None, :] >= t[:, None], (gamma * lam) ** power, torch.zeros_like(power))
    advantages = (deltas @ discount.T) * m
    return advantages, (advantages + v) * m


# ============================================================ ppo_policy_loss
@valid("ppo_policy_loss", "min of the positive surrogates, torch.where")
def ppo_policy_loss__min_form(logprobs, old_logprobs, advantages, mask, clip_range):
    keep = mask.bool()
    ratio = (logprobs - old_logprobs).exp()
    surrogate = advantages * ratio
    clipped = advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    per_token = -torch.min(surrogate, clipped)
    loss = torch.where(keep, per_token, torch.zeros_like(per_token)).sum() / keep.sum()
    fraction = (clipped < surrogate) & keep
    return loss, fraction.sum() / keep.sum()


@valid("ppo_policy_loss", "boolean indexing")
def ppo_policy_loss__indexing(logprobs, old_logprobs, advantages, mask, clip_range):
    keep = mask.bool()
    lp, old, adv = logprobs[keep], old_logprobs[keep], advantages[keep]
    ratio = torch.exp(lp - old)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    return torch.max(unclipped, clipped).mean(), (clipped > unclipped).to(ratio.dtype).mean()


# ============================================================ ppo_value_loss
@valid("ppo_value_loss", "boolean indexing")
def ppo_value_loss__indexing(values, old_values, returns, mask, clip_range):
    keep = mask.bool()
    v, old, R = values[keep], old_values[keep], returns[keep]
    clipped = torch.clamp(v, old - clip_range, old + clip_range)
    return 0.5 * torch.max((v - R).pow(2), (clipped - R).pow(2)).mean()


@valid("ppo_value_loss", "torch.where")
def ppo_value_loss__where(values, old_values, returns, mask, clip_range):
    delta = values - old_values
    clipped = old_values + torch.where(delta.abs() > clip_range, clip_range * delta.sign(), delta)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    keep = mask != 0
    return 0.5 * torch.where(keep, losses, torch.zeros_like(losses)).sum() / keep.sum()


# ============================================================ concatenated_pair_logps
@valid("concatenated_pair_logps", "cross_entropy(reduction='none') with masked labels")
def concatenated_pair_logps__cross_entropy(logits, input_ids, completion_mask):
    labels = input_ids[:, 1:].masked_fill(completion_mask[:, 1:] == 0, -100)   # the target of the logits at t is token t+1
    logits = logits[:, :-1] if logits.dtype == torch.float64 else logits[:, :-1].float()
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")   # (2B, T-1), 0 where ignored
    logps = -nll.sum(-1)
    chosen, rejected = logps.chunk(2)
    return chosen, rejected


@valid("concatenated_pair_logps", "gather of log_softmax, then a masked sum")
def concatenated_pair_logps__gather(logits, input_ids, completion_mask):
    logits = logits if logits.dtype == torch.float64 else logits.float()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, input_ids[:, 1:].unsqueeze(2)).squeeze(2)
    keep = completion_mask[:, 1:].bool()
    summed = torch.where(keep, logps, torch.zeros_like(logps)).sum(dim=1)
    B = logits.shape[0] // 2
    return summed[:B], summed[B:]


@valid("concatenated_pair_logps", "earlier exercises' references, then split")
def concatenated_pair_logps__earlier(logits, input_ids, completion_mask):
    from alignlab import reference
    token_logps = reference.token_logprobs(logits, input_ids)                  # (2B, T-1)
    logps = reference.sequence_logprob(token_logps, completion_mask)           # (2B,)
    B = logps.shape[0] // 2
    return logps[:B], logps[B:]


# ============================================================ dpo_logits
@valid("dpo_logits", "policy gap minus reference gap")
def dpo_logits__gaps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    return (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)


@valid("dpo_logits", "stacked and weighted")
def dpo_logits__stacked(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    stacked = torch.stack([policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps], dim=-1)
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=stacked.dtype)
    return stacked @ signs


# ============================================================ dpo_loss
@valid("dpo_loss", "softplus form")
def dpo_loss__softplus(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = F.softplus(rejected_rewards - chosen_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


@valid("dpo_loss", "reference detached and computed under no_grad")
def dpo_loss__no_grad_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = ref_chosen_logps.detach() - ref_rejected_logps.detach()
    loss = -F.logsigmoid(beta * (pi_logratios - ref_logratios)).mean()
    with torch.no_grad():
        chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
        rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    return loss, chosen_rewards, rejected_rewards


# ============================================================ dpo_preference_probability
@valid("dpo_preference_probability", "from implicit rewards")
def dpo_preference_probability__rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    return torch.sigmoid(chosen - rejected)


@valid("dpo_preference_probability", "earlier exercises from the library")
def dpo_preference_probability__library(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    from alignlab import reference
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    return reference.bradley_terry_probability(chosen, rejected)


# ============================================================ dpo_gradient_weight
@valid("dpo_gradient_weight", "one minus the preference probability")
def dpo_gradient_weight__complement(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return 1 - torch.sigmoid(beta * h)


@valid("dpo_gradient_weight", "from implicit rewards")
def dpo_gradient_weight__rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    return torch.sigmoid(rejected - chosen)


# ============================================================ cdpo_loss
@valid("cdpo_loss", "softplus form")
def cdpo_loss__softplus(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, label_smoothing):
    x = beta * ((policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps))
    return ((1 - label_smoothing) * F.softplus(-x) + label_smoothing * F.softplus(x)).mean()


@valid("cdpo_loss", "reference dpo_logits from notebook 05")
def cdpo_loss__library_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, label_smoothing):
    from alignlab import reference
    h = reference.dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    e = label_smoothing
    return -((1 - e) * F.logsigmoid(beta * h) + e * F.logsigmoid(-beta * h)).mean()


# ============================================================ ipo_loss
@valid("ipo_loss", "0.5 / tau and pow")
def ipo_loss__pow(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau):
    h = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
    return (h - 0.5 / tau).pow(2).mean()


@valid("ipo_loss", "mse_loss against the target")
def ipo_loss__mse(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return F.mse_loss(h, torch.full_like(h, 1 / (2 * tau)))


# ============================================================ simpo_loss
@valid("simpo_loss", "softplus form")
def simpo_loss__softplus(policy_chosen_avg_logps, policy_rejected_avg_logps, beta, gamma):
    return F.softplus(gamma - beta * (policy_chosen_avg_logps - policy_rejected_avg_logps)).mean()


@valid("simpo_loss", "gamma over beta inside")
def simpo_loss__margin_inside(policy_chosen_avg_logps, policy_rejected_avg_logps, beta, gamma):
    gap = policy_chosen_avg_logps - policy_rejected_avg_logps - gamma / beta
    return -F.logsigmoid(beta * gap).mean()


# ============================================================ group_relative_advantages
@valid("group_relative_advantages", "std_mean")
def group_relative_advantages__std_mean(rewards, eps=1e-6):
    if rewards.shape[-1] < 2:
        raise ValueError("GRPO needs at least two samples per group")
    std, mean = torch.std_mean(rewards, dim=-1, keepdim=True)
    return (rewards - mean) / (std + eps)


@valid("group_relative_advantages", "explicit unbiased variance")
def group_relative_advantages__explicit(rewards, eps=1e-6):
    G = rewards.shape[1]
    if G == 1:
        raise ValueError("G = 1: one sample per prompt has no spread")
    centred = rewards - rewards.sum(1, keepdim=True) / G
    std = torch.sqrt((centred ** 2).sum(1, keepdim=True) / (G - 1))
    return centred / (std + eps)


# ============================================================ kl_estimators (notebook 07)
@valid("kl_estimators", "boolean where, expm1")
def kl_estimators__where(logprobs, ref_logprobs, mask):
    keep = mask.bool()
    log_r = torch.where(keep, ref_logprobs - logprobs, torch.zeros_like(logprobs))
    return -log_r, log_r.pow(2) / 2, torch.expm1(log_r) - log_r


@valid("kl_estimators", "from the ratio")
def kl_estimators__ratio(logprobs, ref_logprobs, mask):
    m = mask.to(logprobs.dtype)
    ratio = torch.exp((ref_logprobs - logprobs) * m)
    return (logprobs - ref_logprobs) * m, 0.5 * torch.log(ratio) ** 2, (ratio - 1 - torch.log(ratio)) * m


# ============================================================ grpo_policy_loss (notebook 07)
@valid("grpo_policy_loss", "min of the positive surrogates, lengths clamped")
def grpo_policy_loss__min_form(logprobs, old_logprobs, advantages, mask, clip_range, aggregation):
    m = mask.to(logprobs.dtype)
    ratio = (logprobs - old_logprobs).exp()
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(adv * ratio, adv * ratio.clamp(1 - clip_range, 1 + clip_range)) * m
    if aggregation == "sequence_mean":
        return (per_token.sum(-1) / m.sum(-1).clamp(min=1)).mean()
    if aggregation == "token_mean":
        return per_token.sum() / m.sum().clamp(min=1)
    if aggregation == "constant":
        return per_token.sum() / m.numel()
    raise ValueError(f"unknown aggregation {aggregation}")


@valid("grpo_policy_loss", "dictionary of aggregations")
def grpo_policy_loss__table(logprobs, old_logprobs, advantages, mask, clip_range, aggregation):
    m = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    a = advantages[:, None].expand_as(ratio)
    losses = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)) * m
    divide = {"sequence_mean": lambda: (losses.sum(1) / torch.maximum(m.sum(1), torch.ones(()))).mean(),
              "token_mean": lambda: losses.sum() / m.sum(),
              "constant": lambda: losses.sum() / (m.shape[0] * m.shape[1])}
    if aggregation not in divide:
        raise ValueError(aggregation)
    return divide[aggregation]()
