"""Wrong implementations of every exercise: each must lose its points.

``WRONG = {exercise: [(mistake, fn), ...]}``. Mistake names that match the named
mistakes of docs/conventions.md, Autograding ("no shift", "sign flipped", ...), are the
ones the checks should also name in their message. See ``catalogue/__init__.py`` for the
scheme (top-level functions, ``cell_source``).
"""
import math

import torch
import torch.nn.functional as F

from . import register

WRONG: dict = {}


def wrong(exercise, mistake):
    return register(WRONG, exercise, mistake)


# ============================================================ log_softmax
@wrong("log_softmax", "exp overflow in softmax (nan)")
def log_softmax__naive_overflow(logits):
    logits = logits.float()
    return torch.log(logits.exp() / logits.exp().sum(dim=-1, keepdim=True))


@wrong("log_softmax", "log of softmax underflows")
def log_softmax__log_of_softmax(logits):
    return torch.log(torch.softmax(logits.float(), dim=-1))


@wrong("log_softmax", "exp overflow (maximum not subtracted)")
def log_softmax__no_max(logits):
    logits = logits.float()
    return logits - logits.exp().sum(dim=-1, keepdim=True).log()


@wrong("log_softmax", "normalized over the wrong dimension")
def log_softmax__wrong_dim(logits):
    logits = logits.float()
    shifted = logits - logits.amax(dim=0, keepdim=True)
    return shifted - shifted.exp().sum(dim=0, keepdim=True).log()


@wrong("log_softmax", "maximum not added back")
def log_softmax__max_forgotten(logits):
    logits = logits.float()
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    return logits - shifted.exp().sum(dim=-1, keepdim=True).log()


@wrong("log_softmax", "softmax instead of log-softmax")
def log_softmax__probabilities(logits):
    return torch.softmax(logits.float(), dim=-1)


@wrong("log_softmax", "computed in low precision")
def log_softmax__bf16(logits):
    return torch.log_softmax(logits.bfloat16(), dim=-1).float()


@wrong("log_softmax", "only calls the reference")
def log_softmax__delegates(logits):
    from alignlab import reference
    return reference.log_softmax(logits)


# ============================================================ bradley_terry_probability
@wrong("bradley_terry_probability", "sign flipped")
def bradley_terry_probability__sign(reward_a, reward_b):
    return torch.sigmoid(reward_b - reward_a)


@wrong("bradley_terry_probability", "exp overflow")
def bradley_terry_probability__overflow(reward_a, reward_b):
    return torch.exp(reward_a) / (torch.exp(reward_a) + torch.exp(reward_b))


@wrong("bradley_terry_probability", "ratio of rewards instead of exponentials")
def bradley_terry_probability__ratio(reward_a, reward_b):
    return reward_a / (reward_a + reward_b)


@wrong("bradley_terry_probability", "tanh instead of sigmoid")
def bradley_terry_probability__tanh(reward_a, reward_b):
    return torch.tanh(reward_a - reward_b)


@wrong("bradley_terry_probability", "only calls the reference")
def bradley_terry_probability__delegates(reward_a, reward_b):
    from alignlab import reference
    return reference.bradley_terry_probability(reward_a, reward_b)


# ============================================================ token_logprobs
@wrong("token_logprobs", "no shift")
def token_logprobs__no_shift(logits, input_ids):
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logps.gather(-1, input_ids[:, :-1, None]).squeeze(-1)


@wrong("token_logprobs", "shifted the wrong way")
def token_logprobs__wrong_shift(logits, input_ids):
    logps = torch.log_softmax(logits[:, 1:].float(), dim=-1)
    return logps.gather(-1, input_ids[:, :-1, None]).squeeze(-1)


@wrong("token_logprobs", "raw logits, no log-softmax")
def token_logprobs__raw_logits(logits, input_ids):
    return logits[:, :-1].float().gather(-1, input_ids[:, 1:, None]).squeeze(-1)


@wrong("token_logprobs", "probabilities instead of log-probabilities")
def token_logprobs__probs(logits, input_ids):
    probs = torch.softmax(logits[:, :-1].float(), dim=-1)
    return probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


@wrong("token_logprobs", "computed in low precision")
def token_logprobs__bf16(logits, input_ids):
    logps = torch.log_softmax(logits[:, :-1].bfloat16(), dim=-1)
    return logps.gather(-1, input_ids[:, 1:, None]).squeeze(-1).float()


@wrong("token_logprobs", "only calls the reference")
def token_logprobs__delegates(logits, input_ids):
    from alignlab import reference
    return reference.token_logprobs(logits, input_ids)


# ============================================================ sequence_logprob
@wrong("sequence_logprob", "mask not shifted")
def sequence_logprob__mask_not_shifted(token_logps, completion_mask, average=False):
    mask = completion_mask[:, :-1].to(token_logps.dtype)
    total = (token_logps * mask).sum(-1)
    return total / mask.sum(-1) if average else total


@wrong("sequence_logprob", "prompt not masked")
def sequence_logprob__prompt_not_masked(token_logps, completion_mask, average=False):
    return token_logps.mean(-1) if average else token_logps.sum(-1)


@wrong("sequence_logprob", "mean instead of sum")
def sequence_logprob__always_mean(token_logps, completion_mask, average=False):
    mask = completion_mask[:, 1:].to(token_logps.dtype)
    return (token_logps * mask).sum(-1) / mask.sum(-1)


@wrong("sequence_logprob", "averaged over all positions")
def sequence_logprob__average_all_positions(token_logps, completion_mask, average=False):
    mask = completion_mask[:, 1:].to(token_logps.dtype)
    total = (token_logps * mask).sum(-1)
    return total / token_logps.shape[1] if average else total


@wrong("sequence_logprob", "sum instead of mean")
def sequence_logprob__average_ignored(token_logps, completion_mask, average=False):
    mask = completion_mask[:, 1:].to(token_logps.dtype)
    return (token_logps * mask).sum(-1)


@wrong("sequence_logprob", "only calls the reference")
def sequence_logprob__delegates(token_logps, completion_mask, average=False):
    from alignlab import reference
    return reference.sequence_logprob(token_logps, completion_mask, average)


# ============================================================ sft_loss
@wrong("sft_loss", "no shift")
def sft_loss__no_shift(logits, input_ids, completion_mask):
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, input_ids[:, :, None]).squeeze(-1)
    mask = completion_mask.float()
    return -(logps * mask).sum() / mask.sum()


@wrong("sft_loss", "prompt tokens counted")
def sft_loss__prompt_counted(logits, input_ids, completion_mask):
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return -logps.mean()


@wrong("sft_loss", "mean of per-sequence means")
def sft_loss__row_means(logits, input_ids, completion_mask):
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = completion_mask[:, 1:].float()
    if mask.sum() == 0:
        raise ValueError("no completion token")
    return (-(logps * mask).sum(-1) / mask.sum(-1)).mean()


@wrong("sft_loss", "padding counted")
def sft_loss__padding_counted(logits, input_ids, completion_mask):
    labels = input_ids.clone()
    after_prompt = completion_mask.long().cumsum(-1) > 0        # every position from the first completion token on
    labels[~after_prompt] = -100
    if (labels[:, 1:] == -100).all():
        raise ValueError("no completion token")
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


@wrong("sft_loss", "overflow on large logits")
def sft_loss__log_of_softmax(logits, input_ids, completion_mask):
    probs = torch.softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = completion_mask[:, 1:].float()
    if mask.sum() == 0:
        raise ValueError("no completion token")
    return -(torch.log(probs) * mask).sum() / mask.sum()


@wrong("sft_loss", "mask not shifted")
def sft_loss__mask_not_shifted(logits, input_ids, completion_mask):
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = completion_mask[:, :-1].float()
    if mask.sum() == 0:
        raise ValueError("no completion token")
    return -(logps * mask).sum() / mask.sum()


@wrong("sft_loss", "only calls the reference")
def sft_loss__delegates(logits, input_ids, completion_mask):
    from alignlab import reference
    return reference.sft_loss(logits, input_ids, completion_mask)


# ============================================================ last_token_index
@wrong("last_token_index", "right padding only")
def last_token_index__right_padding_only(attention_mask):
    return attention_mask.long().sum(-1) - 1


@wrong("last_token_index", "first real token")
def last_token_index__first_one(attention_mask):
    return attention_mask.long().argmax(-1)


@wrong("last_token_index", "count instead of index")
def last_token_index__length(attention_mask):
    return attention_mask.long().sum(-1)


@wrong("last_token_index", "flipped index not converted back")
def last_token_index__from_the_end(attention_mask):
    return attention_mask.long().flip(-1).argmax(-1)


@wrong("last_token_index", "only calls the reference")
def last_token_index__delegates(attention_mask):
    from alignlab import reference
    return reference.last_token_index(attention_mask)


# ============================================================ pairwise_reward_loss
@wrong("pairwise_reward_loss", "log(sigmoid(x)) overflow")
def pairwise_reward_loss__log_sigmoid(chosen_rewards, rejected_rewards, margin=None):
    gap = chosen_rewards - rejected_rewards - (0.0 if margin is None else margin)
    return -torch.log(torch.sigmoid(gap)).mean()


@wrong("pairwise_reward_loss", "sign flipped")
def pairwise_reward_loss__sign(chosen_rewards, rejected_rewards, margin=None):
    gap = rejected_rewards - chosen_rewards - (0.0 if margin is None else margin)
    return -F.logsigmoid(gap).mean()


@wrong("pairwise_reward_loss", "margin added instead of subtracted")
def pairwise_reward_loss__margin_added(chosen_rewards, rejected_rewards, margin=None):
    gap = chosen_rewards - rejected_rewards + (0.0 if margin is None else margin)
    return -F.logsigmoid(gap).mean()


@wrong("pairwise_reward_loss", "margin ignored")
def pairwise_reward_loss__margin_ignored(chosen_rewards, rejected_rewards, margin=None):
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


@wrong("pairwise_reward_loss", "sum instead of mean")
def pairwise_reward_loss__sum(chosen_rewards, rejected_rewards, margin=None):
    gap = chosen_rewards - rejected_rewards - (0.0 if margin is None else margin)
    return -F.logsigmoid(gap).sum()


@wrong("pairwise_reward_loss", "only calls the reference")
def pairwise_reward_loss__delegates(chosen_rewards, rejected_rewards, margin=None):
    from alignlab import reference
    return reference.pairwise_reward_loss(chosen_rewards, rejected_rewards, margin)


# ============================================================ best_of_n_kl
@wrong("best_of_n_kl", "the (n-1)/n term missing")
def best_of_n_kl__log_n(n):
    if n < 1:
        raise ValueError("n must be at least 1")
    return math.log(n)


@wrong("best_of_n_kl", "plus instead of minus")
def best_of_n_kl__plus(n):
    if n < 1:
        raise ValueError("n must be at least 1")
    return math.log(n) + (n - 1) / n


@wrong("best_of_n_kl", "log base 2")
def best_of_n_kl__log2(n):
    if n < 1:
        raise ValueError("n must be at least 1")
    return math.log2(n) - (n - 1) / n


@wrong("best_of_n_kl", "(n-1)/n inverted")
def best_of_n_kl__inverted(n):
    if n < 1:
        raise ValueError("n must be at least 1")
    return math.log(n) - n / (n - 1) if n > 1 else 0.0


@wrong("best_of_n_kl", "only calls the reference")
def best_of_n_kl__delegates(n):
    from alignlab import reference
    return reference.best_of_n_kl(n)


# ============================================================ reinforce_loss (policy gradients)
@wrong("reinforce_loss", "baseline differentiated through")
def reinforce_loss__baseline_not_detached(logprobs, rewards, mask, baseline=None):
    weights = rewards if baseline is None else rewards - baseline
    return -(weights * (logprobs * mask).sum(-1)).mean()


@wrong("reinforce_loss", "log-probs averaged instead of summed")
def reinforce_loss__averaged(logprobs, rewards, mask, baseline=None):
    weights = (rewards if baseline is None else rewards - baseline).detach()
    mask = mask.to(logprobs.dtype)
    return -(weights * (logprobs * mask).sum(-1) / mask.sum(-1)).mean()


@wrong("reinforce_loss", "sign flipped")
def reinforce_loss__sign(logprobs, rewards, mask, baseline=None):
    weights = (rewards if baseline is None else rewards - baseline).detach()
    return (weights * (logprobs * mask).sum(-1)).mean()


@wrong("reinforce_loss", "mask ignored")
def reinforce_loss__unmasked(logprobs, rewards, mask, baseline=None):
    weights = (rewards if baseline is None else rewards - baseline).detach()
    return -(weights * logprobs.sum(-1)).mean()


@wrong("reinforce_loss", "baseline ignored")
def reinforce_loss__no_baseline(logprobs, rewards, mask, baseline=None):
    return -(rewards.detach() * (logprobs * mask).sum(-1)).mean()


@wrong("reinforce_loss", "sum over the batch instead of the mean")
def reinforce_loss__batch_sum(logprobs, rewards, mask, baseline=None):
    weights = (rewards if baseline is None else rewards - baseline).detach()
    return -(weights * (logprobs * mask).sum(-1)).sum()


@wrong("reinforce_loss", "only calls the reference")
def reinforce_loss__delegates(logprobs, rewards, mask, baseline=None):
    from alignlab import reference
    return reference.reinforce_loss(logprobs, rewards, mask, baseline)


# ============================================================ rloo_advantages (policy gradients)
@wrong("rloo_advantages", "RLOO including the sample itself")
def rloo_advantages__group_mean(rewards):
    if rewards.shape[1] < 2:
        raise ValueError("G >= 2")
    return rewards - rewards.mean(dim=1, keepdim=True)


@wrong("rloo_advantages", "divided by G instead of G - 1")
def rloo_advantages__by_g(rewards):
    G = rewards.shape[1]
    if G < 2:
        raise ValueError("G >= 2")
    return rewards - (rewards.sum(dim=1, keepdim=True) - rewards) / G


@wrong("rloo_advantages", "groups along the wrong dimension")
def rloo_advantages__wrong_dim(rewards):
    if rewards.shape[1] < 2:
        raise ValueError("G >= 2")
    P = rewards.shape[0]
    return rewards - (rewards.sum(dim=0, keepdim=True) - rewards) / max(P - 1, 1)


@wrong("rloo_advantages", "G = 1 not refused")
def rloo_advantages__no_error(rewards):
    G = rewards.shape[1]
    return rewards - (rewards.sum(dim=1, keepdim=True) - rewards) / (G - 1)


@wrong("rloo_advantages", "divided by the group std (GRPO)")
def rloo_advantages__grpo(rewards):
    if rewards.shape[1] < 2:
        raise ValueError("G >= 2")
    return (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-6)


@wrong("rloo_advantages", "only calls the reference")
def rloo_advantages__delegates(rewards):
    from alignlab import reference
    return reference.rloo_advantages(rewards)


# ============================================================ token_entropy (policy gradients)
@wrong("token_entropy", "entropy from unnormalised logits")
def token_entropy__raw_logits(logits, mask):
    logits = logits.float()
    return -(torch.softmax(logits, -1) * logits).sum(-1) * mask


@wrong("token_entropy", "log of softmax underflows")
def token_entropy__log_of_softmax(logits, mask):
    p = torch.softmax(logits.float(), -1)
    return -(p * torch.log(p)).sum(-1) * mask


@wrong("token_entropy", "exp overflow (maximum not subtracted)")
def token_entropy__naive(logits, mask):
    e = logits.float().exp()
    p = e / e.sum(-1, keepdim=True)
    return -(p * torch.log(p)).sum(-1) * mask


@wrong("token_entropy", "not masked")
def token_entropy__unmasked(logits, mask):
    logp = torch.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1)


@wrong("token_entropy", "computed in low precision")
def token_entropy__bf16(logits, mask):
    logp = torch.log_softmax(logits.bfloat16(), -1)
    return (-(logp.exp() * logp).sum(-1)).float() * mask


@wrong("token_entropy", "log-probs as x - logsumexp(x) in float32")
def token_entropy__categorical(logits, mask):
    return torch.distributions.Categorical(logits=logits.float()).entropy() * mask


@wrong("token_entropy", "only calls the reference")
def token_entropy__delegates(logits, mask):
    from alignlab import reference
    return reference.token_entropy(logits, mask)


# ============================================================ kl_penalized_rewards
@wrong("kl_penalized_rewards", "score on the wrong token: the last column")
def kl_penalized_rewards__score_on_last_column(scores, logprobs, ref_logprobs, mask, kl_coef):
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    last = torch.zeros_like(rewards)
    last[:, -1] = scores
    return rewards + last


@wrong("kl_penalized_rewards", "score on the wrong token: the first masked token")
def kl_penalized_rewards__score_on_first(scores, logprobs, ref_logprobs, mask, kl_coef):
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    first = mask.long().argmax(-1)
    return rewards + scores[:, None] * F.one_hot(first, mask.shape[1]).to(rewards.dtype)


@wrong("kl_penalized_rewards", "score on the wrong token: mask.sum() - 1")
def kl_penalized_rewards__right_padding_only(scores, logprobs, ref_logprobs, mask, kl_coef):
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    last = mask.long().sum(-1) - 1
    return rewards + scores[:, None] * F.one_hot(last, mask.shape[1]).to(rewards.dtype)


@wrong("kl_penalized_rewards", "KL flipped")
def kl_penalized_rewards__sign(scores, logprobs, ref_logprobs, mask, kl_coef):
    rewards = kl_coef * (logprobs - ref_logprobs) * mask
    last = (torch.arange(mask.shape[1]) * mask).argmax(-1)
    return rewards + scores[:, None] * F.one_hot(last, mask.shape[1]).to(rewards.dtype)


@wrong("kl_penalized_rewards", "KL direction flipped (reverse-KL estimator)")
def kl_penalized_rewards__reverse_kl(scores, logprobs, ref_logprobs, mask, kl_coef):
    log_ratio = ref_logprobs - logprobs          # estimates KL(pi_ref || pi) instead of KL(pi || pi_ref)
    rewards = -kl_coef * torch.exp(log_ratio) * log_ratio * mask
    last = (torch.arange(mask.shape[1]) * mask).argmax(-1)
    return rewards + scores[:, None] * F.one_hot(last, mask.shape[1]).to(rewards.dtype)


@wrong("kl_penalized_rewards", "KL not masked")
def kl_penalized_rewards__unmasked_penalty(scores, logprobs, ref_logprobs, mask, kl_coef):
    rewards = -kl_coef * (logprobs - ref_logprobs)
    last = (torch.arange(mask.shape[1]) * mask).argmax(-1)
    return rewards + scores[:, None] * F.one_hot(last, mask.shape[1]).to(rewards.dtype)


@wrong("kl_penalized_rewards", "score replaces the penalty")
def kl_penalized_rewards__score_replaces(scores, logprobs, ref_logprobs, mask, kl_coef):
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    last = (torch.arange(mask.shape[1]) * mask).argmax(-1)
    rewards[torch.arange(len(scores)), last] = scores.to(rewards.dtype)
    return rewards


@wrong("kl_penalized_rewards", "only calls the reference")
def kl_penalized_rewards__delegates(scores, logprobs, ref_logprobs, mask, kl_coef):
    from alignlab import reference
    return reference.kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, kl_coef)


# ============================================================ masked_mean
@wrong("masked_mean", "mask ignored")
def masked_mean__unmasked(x, mask):
    return x.mean()


@wrong("masked_mean", "divided by every entry")
def masked_mean__divided_by_numel(x, mask):
    return (x * mask).sum() / mask.numel()


@wrong("masked_mean", "mean of row means")
def masked_mean__row_means(x, mask):
    mask = mask.to(x.dtype)
    return ((x * mask).sum(-1) / mask.sum(-1)).mean()


@wrong("masked_mean", "nan for an all-zero mask")
def masked_mean__no_error(x, mask):
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum()


@wrong("masked_mean", "only calls the reference")
def masked_mean__delegates(x, mask):
    from alignlab import reference
    return reference.masked_mean(x, mask)


# ============================================================ masked_whiten
@wrong("masked_whiten", "biased variance")
def masked_whiten__biased(x, mask, shift_mean=True):
    mask = mask.to(x.dtype)
    mean = (x * mask).sum() / mask.sum()
    var = ((x - mean) ** 2 * mask).sum() / mask.sum()
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


@wrong("masked_whiten", "mask ignored in mean and variance")
def masked_whiten__whole_tensor_stats(x, mask, shift_mean=True):
    mean, var = x.mean(), x.var()
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


@wrong("masked_whiten", "shift_mean ignored")
def masked_whiten__shift_ignored(x, mask, shift_mean=True):
    mask = mask.to(x.dtype)
    mean = (x * mask).sum() / mask.sum()
    var = ((x - mean) ** 2 * mask).sum() / (mask.sum() - 1)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


@wrong("masked_whiten", "divided by the variance")
def masked_whiten__by_variance(x, mask, shift_mean=True):
    mask = mask.to(x.dtype)
    mean = (x * mask).sum() / mask.sum()
    var = ((x - mean) ** 2 * mask).sum() / (mask.sum() - 1)
    out = (x - mean) / (var + 1e-8)
    return (out if shift_mean else out + mean) * mask


@wrong("masked_whiten", "only calls the reference")
def masked_whiten__delegates(x, mask, shift_mean=True):
    from alignlab import reference
    return reference.masked_whiten(x, mask, shift_mean)


# ============================================================ gae_advantages
@wrong("gae_advantages", "GAE leaking past the mask")
def gae_advantages__leaks(rewards, values, mask, gamma, lam):
    advantages = torch.zeros_like(rewards)
    next_adv, next_value = torch.zeros_like(rewards[:, 0]), torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = delta + gamma * lam * next_adv
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages * mask, (advantages + values) * mask


@wrong("gae_advantages", "bootstrapping from padding")
def gae_advantages__bootstraps_from_padding(rewards, values, mask, gamma, lam):
    mask = mask.to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    next_adv, next_value = torch.zeros_like(rewards[:, 0]), torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


@wrong("gae_advantages", "lam missing")
def gae_advantages__no_lambda(rewards, values, mask, gamma, lam):
    mask = mask.to(rewards.dtype)
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_adv, next_value = torch.zeros_like(rewards[:, 0]), torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * next_adv) * mask[:, t]
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


@wrong("gae_advantages", "gamma and lam swapped")
def gae_advantages__swapped(rewards, values, mask, gamma, lam):
    mask = mask.to(rewards.dtype)
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_adv, next_value = torch.zeros_like(rewards[:, 0]), torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + lam * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


@wrong("gae_advantages", "returns without the values")
def gae_advantages__returns_are_advantages(rewards, values, mask, gamma, lam):
    mask = mask.to(rewards.dtype)
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_adv, next_value = torch.zeros_like(rewards[:, 0]), torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, advantages.clone()


@wrong("gae_advantages", "recursion run forwards")
def gae_advantages__forward(rewards, values, mask, gamma, lam):
    mask = mask.to(rewards.dtype)
    values = values * mask
    advantages = torch.zeros_like(rewards)
    prev_adv, prev_value = torch.zeros_like(rewards[:, 0]), torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1]):
        delta = rewards[:, t] + gamma * prev_value - values[:, t]
        prev_adv = (delta + gamma * lam * prev_adv) * mask[:, t]
        advantages[:, t] = prev_adv
        prev_value = values[:, t]
    return advantages, (advantages + values) * mask


@wrong("gae_advantages", "only calls the reference")
def gae_advantages__delegates(rewards, values, mask, gamma, lam):
    from alignlab import reference
    return reference.gae_advantages(rewards, values, mask, gamma, lam)


# ============================================================ ppo_policy_loss
@wrong("ppo_policy_loss", "min instead of max")
def ppo_policy_loss__min(logprobs, old_logprobs, advantages, mask, clip_range):
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = (torch.minimum(pg1, pg2) * mask).sum() / mask.sum()
    return loss, ((pg2 > pg1).to(mask.dtype) * mask).sum() / mask.sum()


@wrong("ppo_policy_loss", "clip on the wrong term: the advantage")
def ppo_policy_loss__clipped_advantage(logprobs, old_logprobs, advantages, mask, clip_range):
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    pg1 = -advantages * ratio
    pg2 = -torch.clamp(advantages, -clip_range, clip_range) * ratio
    loss = (torch.maximum(pg1, pg2) * mask).sum() / mask.sum()
    return loss, ((pg2 > pg1).to(mask.dtype) * mask).sum() / mask.sum()


@wrong("ppo_policy_loss", "clip on the wrong term: the log-ratio")
def ppo_policy_loss__clipped_log_ratio(logprobs, old_logprobs, advantages, mask, clip_range):
    mask = mask.to(logprobs.dtype)
    log_ratio = logprobs - old_logprobs
    pg1 = -advantages * torch.exp(log_ratio)
    pg2 = -advantages * torch.exp(torch.clamp(log_ratio, -clip_range, clip_range))
    loss = (torch.maximum(pg1, pg2) * mask).sum() / mask.sum()
    return loss, ((pg2 > pg1).to(mask.dtype) * mask).sum() / mask.sum()


@wrong("ppo_policy_loss", "only the clipped term")
def ppo_policy_loss__clipped_only(logprobs, old_logprobs, advantages, mask, clip_range):
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = (pg2 * mask).sum() / mask.sum()
    return loss, ((pg2 > pg1).to(mask.dtype) * mask).sum() / mask.sum()


@wrong("ppo_policy_loss", "ratio inverted")
def ppo_policy_loss__inverted_ratio(logprobs, old_logprobs, advantages, mask, clip_range):
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(old_logprobs - logprobs)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = (torch.maximum(pg1, pg2) * mask).sum() / mask.sum()
    return loss, ((pg2 > pg1).to(mask.dtype) * mask).sum() / mask.sum()


@wrong("ppo_policy_loss", "minus sign missing")
def ppo_policy_loss__sign(logprobs, old_logprobs, advantages, mask, clip_range):
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    pg1 = advantages * ratio
    pg2 = advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = (torch.maximum(pg1, pg2) * mask).sum() / mask.sum()
    return loss, ((pg2 > pg1).to(mask.dtype) * mask).sum() / mask.sum()


@wrong("ppo_policy_loss", "mask ignored")
def ppo_policy_loss__unmasked(logprobs, old_logprobs, advantages, mask, clip_range):
    ratio = torch.exp(logprobs - old_logprobs)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    return torch.maximum(pg1, pg2).mean(), (pg2 > pg1).to(logprobs.dtype).mean()


@wrong("ppo_policy_loss", "clip fraction counts every ratio outside the range")
def ppo_policy_loss__cleanrl_clipfrac(logprobs, old_logprobs, advantages, mask, clip_range):
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = (torch.maximum(pg1, pg2) * mask).sum() / mask.sum()
    outside = ((ratio - 1).abs() > clip_range).to(mask.dtype)
    return loss, (outside * mask).sum() / mask.sum()


@wrong("ppo_policy_loss", "only calls the reference")
def ppo_policy_loss__delegates(logprobs, old_logprobs, advantages, mask, clip_range):
    from alignlab import reference
    return reference.ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range)


# ============================================================ ppo_value_loss
@wrong("ppo_value_loss", "missing 0.5")
def ppo_value_loss__no_half(values, old_values, returns, mask, clip_range):
    mask = mask.to(values.dtype)
    clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return (losses * mask).sum() / mask.sum()


@wrong("ppo_value_loss", "min instead of max")
def ppo_value_loss__min(values, old_values, returns, mask, clip_range):
    mask = mask.to(values.dtype)
    clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    losses = torch.minimum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * (losses * mask).sum() / mask.sum()


@wrong("ppo_value_loss", "clip on the wrong term: around the returns")
def ppo_value_loss__clip_around_returns(values, old_values, returns, mask, clip_range):
    mask = mask.to(values.dtype)
    clipped = returns + torch.clamp(values - returns, -clip_range, clip_range)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * (losses * mask).sum() / mask.sum()


@wrong("ppo_value_loss", "no clipping")
def ppo_value_loss__unclipped(values, old_values, returns, mask, clip_range):
    mask = mask.to(values.dtype)
    return 0.5 * (((values - returns) ** 2) * mask).sum() / mask.sum()


@wrong("ppo_value_loss", "mask ignored")
def ppo_value_loss__unmasked(values, old_values, returns, mask, clip_range):
    clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2).mean()


@wrong("ppo_value_loss", "only calls the reference")
def ppo_value_loss__delegates(values, old_values, returns, mask, clip_range):
    from alignlab import reference
    return reference.ppo_value_loss(values, old_values, returns, mask, clip_range)


# ============================================================ concatenated_pair_logps
@wrong("concatenated_pair_logps", "chosen and rejected halves swapped")
def concatenated_pair_logps__swapped(logits, input_ids, completion_mask):
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    summed = (logps * completion_mask[:, 1:].float()).sum(-1)
    B = summed.shape[0] // 2
    return summed[B:], summed[:B]


@wrong("concatenated_pair_logps", "halves taken as alternating rows")
def concatenated_pair_logps__interleaved(logits, input_ids, completion_mask):
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    summed = (logps * completion_mask[:, 1:].float()).sum(-1)
    return summed[0::2], summed[1::2]


@wrong("concatenated_pair_logps", "no shift")
def concatenated_pair_logps__no_shift(logits, input_ids, completion_mask):
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, input_ids[:, :, None]).squeeze(-1)
    summed = (logps * completion_mask.float()).sum(-1)
    B = summed.shape[0] // 2
    return summed[:B], summed[B:]


@wrong("concatenated_pair_logps", "mask not shifted")
def concatenated_pair_logps__mask_not_shifted(logits, input_ids, completion_mask):
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    summed = (logps * completion_mask[:, :-1].float()).sum(-1)
    B = summed.shape[0] // 2
    return summed[:B], summed[B:]


@wrong("concatenated_pair_logps", "prompt tokens counted")
def concatenated_pair_logps__prompt_counted(logits, input_ids, completion_mask):
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    summed = logps.sum(-1)
    B = summed.shape[0] // 2
    return summed[:B], summed[B:]


@wrong("concatenated_pair_logps", "padding counted")
def concatenated_pair_logps__padding_counted(logits, input_ids, completion_mask):
    after_prompt = (completion_mask.long().cumsum(-1) > 0).float()      # every position from the first completion token on
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    summed = (logps * after_prompt[:, 1:]).sum(-1)
    B = summed.shape[0] // 2
    return summed[:B], summed[B:]


@wrong("concatenated_pair_logps", "mean instead of sum")
def concatenated_pair_logps__mean(logits, input_ids, completion_mask):
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = completion_mask[:, 1:].float()
    averaged = (logps * mask).sum(-1) / mask.sum(-1)
    B = averaged.shape[0] // 2
    return averaged[:B], averaged[B:]


@wrong("concatenated_pair_logps", "overflow on large logits")
def concatenated_pair_logps__log_of_softmax(logits, input_ids, completion_mask):
    probs = torch.softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    summed = (torch.log(probs) * completion_mask[:, 1:].float()).sum(-1)
    B = summed.shape[0] // 2
    return summed[:B], summed[B:]


@wrong("concatenated_pair_logps", "computed in low precision")
def concatenated_pair_logps__bfloat16(logits, input_ids, completion_mask):
    logps = torch.log_softmax(logits[:, :-1].bfloat16(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    summed = (logps * completion_mask[:, 1:].to(logps.dtype)).sum(-1).float()
    B = summed.shape[0] // 2
    return summed[:B], summed[B:]


@wrong("concatenated_pair_logps", "only calls the reference")
def concatenated_pair_logps__delegates(logits, input_ids, completion_mask):
    from alignlab import reference
    return reference.concatenated_pair_logps(logits, input_ids, completion_mask)


# ============================================================ dpo_logits
@wrong("dpo_logits", "reference missing")
def dpo_logits__no_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    return policy_chosen_logps - policy_rejected_logps


@wrong("dpo_logits", "sign flipped")
def dpo_logits__sign(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    return (policy_rejected_logps - ref_rejected_logps) - (policy_chosen_logps - ref_chosen_logps)


@wrong("dpo_logits", "reference added instead of subtracted")
def dpo_logits__reference_added(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    return (policy_chosen_logps + ref_chosen_logps) - (policy_rejected_logps + ref_rejected_logps)


@wrong("dpo_logits", "ratios instead of log-ratio differences")
def dpo_logits__ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    return policy_chosen_logps / ref_chosen_logps - policy_rejected_logps / ref_rejected_logps


@wrong("dpo_logits", "only calls the reference")
def dpo_logits__delegates(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    from alignlab import reference
    return reference.dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)


# ============================================================ dpo_loss
@wrong("dpo_loss", "beta misplaced (outside the log-sigmoid)")
def dpo_loss__beta_outside(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    loss = -beta * F.logsigmoid(chosen - rejected).mean()
    return loss, beta * chosen.detach(), beta * rejected.detach()


@wrong("dpo_loss", "beta on the chosen side only")
def dpo_loss__beta_chosen_only(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    loss = -F.logsigmoid(beta * chosen - rejected).mean()
    return loss, beta * chosen.detach(), beta * rejected.detach()


@wrong("dpo_loss", "log(sigmoid(x)) overflow")
def dpo_loss__log_sigmoid(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    loss = -torch.log(torch.sigmoid(beta * (chosen - rejected))).mean()
    return loss, beta * chosen.detach(), beta * rejected.detach()


@wrong("dpo_loss", "sign flipped")
def dpo_loss__sign(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    loss = -F.logsigmoid(beta * (rejected - chosen)).mean()
    return loss, beta * chosen.detach(), beta * rejected.detach()


@wrong("dpo_loss", "reference missing")
def dpo_loss__no_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    loss = -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps)).mean()
    return loss, beta * policy_chosen_logps.detach(), beta * policy_rejected_logps.detach()


@wrong("dpo_loss", "rewards not detached")
def dpo_loss__rewards_attached(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    loss = -F.logsigmoid(beta * (chosen - rejected)).mean()
    return loss, beta * chosen, beta * rejected


@wrong("dpo_loss", "implicit rewards without beta")
def dpo_loss__rewards_without_beta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    loss = -F.logsigmoid(beta * (chosen - rejected)).mean()
    return loss, chosen.detach(), rejected.detach()


@wrong("dpo_loss", "sum instead of mean")
def dpo_loss__batch_sum(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    loss = -F.logsigmoid(beta * (chosen - rejected)).sum()
    return loss, beta * chosen.detach(), beta * rejected.detach()


@wrong("dpo_loss", "sigmoid instead of log-sigmoid")
def dpo_loss__sigmoid(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    loss = -torch.sigmoid(beta * (chosen - rejected)).mean()
    return loss, beta * chosen.detach(), beta * rejected.detach()


@wrong("dpo_loss", "gradient reaches the reference")
def dpo_loss__reference_trains(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    # Right values, but the reference log-probs were never meant to carry gradient:
    # this version swaps the roles so the gradient flows to the reference instead of the policy.
    chosen = policy_chosen_logps.detach() - ref_chosen_logps
    rejected = policy_rejected_logps.detach() - ref_rejected_logps
    loss = -F.logsigmoid(beta * (chosen - rejected)).mean()
    return loss, beta * chosen.detach(), beta * rejected.detach()


@wrong("dpo_loss", "only calls the reference")
def dpo_loss__delegates(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    from alignlab import reference
    return reference.dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)


# ============================================================ dpo_preference_probability
@wrong("dpo_preference_probability", "beta missing")
def dpo_preference_probability__no_beta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return torch.sigmoid(h)


@wrong("dpo_preference_probability", "sign flipped")
def dpo_preference_probability__sign(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return torch.sigmoid(-beta * h)


@wrong("dpo_preference_probability", "reference missing")
def dpo_preference_probability__no_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return torch.sigmoid(beta * (policy_chosen_logps - policy_rejected_logps))


@wrong("dpo_preference_probability", "logits, not a probability")
def dpo_preference_probability__logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return beta * ((policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps))


@wrong("dpo_preference_probability", "only calls the reference")
def dpo_preference_probability__delegates(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    from alignlab import reference
    return reference.dpo_preference_probability(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)


# ============================================================ dpo_gradient_weight
@wrong("dpo_gradient_weight", "sign flipped (that is the preference probability)")
def dpo_gradient_weight__sign(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return torch.sigmoid(beta * h)


@wrong("dpo_gradient_weight", "beta missing")
def dpo_gradient_weight__no_beta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return torch.sigmoid(-h)


@wrong("dpo_gradient_weight", "reference missing")
def dpo_gradient_weight__no_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return torch.sigmoid(beta * (policy_rejected_logps - policy_chosen_logps))


@wrong("dpo_gradient_weight", "beta included in the weight")
def dpo_gradient_weight__times_beta(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return beta * torch.sigmoid(-beta * h)


@wrong("dpo_gradient_weight", "only calls the reference")
def dpo_gradient_weight__delegates(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    from alignlab import reference
    return reference.dpo_gradient_weight(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)


# ============================================================ cdpo_loss
@wrong("cdpo_loss", "label smoothing swapped")
def cdpo_loss__sides_swapped(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, label_smoothing):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    e = label_smoothing
    return (-e * F.logsigmoid(beta * h) - (1 - e) * F.logsigmoid(-beta * h)).mean()


@wrong("cdpo_loss", "robust DPO instead of conservative DPO")
def cdpo_loss__robust(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, label_smoothing):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    e = label_smoothing
    return ((-(1 - e) * F.logsigmoid(beta * h) + e * F.logsigmoid(-beta * h)) / (1 - 2 * e)).mean()


@wrong("cdpo_loss", "label smoothing ignored")
def cdpo_loss__plain_dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, label_smoothing):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * h).mean()


@wrong("cdpo_loss", "log(sigmoid(x)) overflow")
def cdpo_loss__log_sigmoid(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, label_smoothing):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    e = label_smoothing
    return (-(1 - e) * torch.log(torch.sigmoid(beta * h)) - e * torch.log(torch.sigmoid(-beta * h))).mean()


@wrong("cdpo_loss", "beta misplaced (outside the log-sigmoid)")
def cdpo_loss__beta_outside(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, label_smoothing):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    e = label_smoothing
    return (beta * (-(1 - e) * F.logsigmoid(h) - e * F.logsigmoid(-h))).mean()


@wrong("cdpo_loss", "only calls the reference")
def cdpo_loss__delegates(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, label_smoothing):
    from alignlab import reference
    return reference.cdpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, label_smoothing)


# ============================================================ ipo_loss
@wrong("ipo_loss", "missing 2 in the target")
def ipo_loss__target_one_over_tau(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return ((h - 1 / tau) ** 2).mean()


@wrong("ipo_loss", "target tau/2 instead of 1/(2 tau)")
def ipo_loss__half_tau(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return ((h - tau / 2) ** 2).mean()


@wrong("ipo_loss", "target sign flipped")
def ipo_loss__sign(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return ((h + 1 / (2 * tau)) ** 2).mean()


@wrong("ipo_loss", "absolute error instead of square")
def ipo_loss__abs(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return (h - 1 / (2 * tau)).abs().mean()


@wrong("ipo_loss", "tau multiplies h (DPO-style beta)")
def ipo_loss__tau_times_h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return ((tau * h - 0.5) ** 2).mean()


@wrong("ipo_loss", "reference missing")
def ipo_loss__no_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau):
    h = policy_chosen_logps - policy_rejected_logps
    return ((h - 1 / (2 * tau)) ** 2).mean()


@wrong("ipo_loss", "only calls the reference")
def ipo_loss__delegates(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau):
    from alignlab import reference
    return reference.ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau)


# ============================================================ simpo_loss
@wrong("simpo_loss", "gamma inside beta")
def simpo_loss__gamma_inside_beta(policy_chosen_avg_logps, policy_rejected_avg_logps, beta, gamma):
    return -F.logsigmoid(beta * (policy_chosen_avg_logps - policy_rejected_avg_logps - gamma)).mean()


@wrong("simpo_loss", "gamma added instead of subtracted")
def simpo_loss__gamma_added(policy_chosen_avg_logps, policy_rejected_avg_logps, beta, gamma):
    return -F.logsigmoid(beta * (policy_chosen_avg_logps - policy_rejected_avg_logps) + gamma).mean()


@wrong("simpo_loss", "log(sigmoid(x)) overflow")
def simpo_loss__log_sigmoid(policy_chosen_avg_logps, policy_rejected_avg_logps, beta, gamma):
    return -torch.log(torch.sigmoid(beta * (policy_chosen_avg_logps - policy_rejected_avg_logps) - gamma)).mean()


@wrong("simpo_loss", "sign flipped")
def simpo_loss__sign(policy_chosen_avg_logps, policy_rejected_avg_logps, beta, gamma):
    return -F.logsigmoid(beta * (policy_rejected_avg_logps - policy_chosen_avg_logps) - gamma).mean()


@wrong("simpo_loss", "gamma ignored")
def simpo_loss__no_margin(policy_chosen_avg_logps, policy_rejected_avg_logps, beta, gamma):
    return -F.logsigmoid(beta * (policy_chosen_avg_logps - policy_rejected_avg_logps)).mean()


@wrong("simpo_loss", "only calls the reference")
def simpo_loss__delegates(policy_chosen_avg_logps, policy_rejected_avg_logps, beta, gamma):
    from alignlab import reference
    return reference.simpo_loss(policy_chosen_avg_logps, policy_rejected_avg_logps, beta, gamma)


# ============================================================ group_relative_advantages
@wrong("group_relative_advantages", "biased std")
def group_relative_advantages__biased(rewards, eps=1e-6):
    if rewards.shape[1] < 2:
        raise ValueError("each group needs at least two samples")
    mean = rewards.mean(1, keepdim=True)
    return (rewards - mean) / (rewards.std(1, keepdim=True, correction=0) + eps)


@wrong("group_relative_advantages", "normalized over the whole batch")
def group_relative_advantages__global(rewards, eps=1e-6):
    if rewards.shape[1] < 2:
        raise ValueError("each group needs at least two samples")
    return (rewards - rewards.mean()) / (rewards.std() + eps)


@wrong("group_relative_advantages", "normalized over the wrong dimension")
def group_relative_advantages__wrong_dim(rewards, eps=1e-6):
    if rewards.shape[1] < 2:
        raise ValueError("each group needs at least two samples")
    return (rewards - rewards.mean(0, keepdim=True)) / (rewards.std(0, keepdim=True) + eps)


@wrong("group_relative_advantages", "std missing")
def group_relative_advantages__centred_only(rewards, eps=1e-6):
    if rewards.shape[1] < 2:
        raise ValueError("each group needs at least two samples")
    return rewards - rewards.mean(1, keepdim=True)


@wrong("group_relative_advantages", "eps missing")
def group_relative_advantages__no_eps(rewards, eps=1e-6):
    if rewards.shape[1] < 2:
        raise ValueError("each group needs at least two samples")
    return (rewards - rewards.mean(1, keepdim=True)) / rewards.std(1, keepdim=True)


@wrong("group_relative_advantages", "only calls the reference")
def group_relative_advantages__delegates(rewards, eps=1e-6):
    from alignlab import reference
    return reference.group_relative_advantages(rewards, eps)


# ============================================================ more of the mistakes the checks diagnose
@wrong("log_softmax", "sign flipped")
def log_softmax__sign(logits):
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1, keepdim=True) - logits


@wrong("bradley_terry_probability", "sigmoid missing")
def bradley_terry_probability__no_sigmoid(reward_a, reward_b):
    return reward_a - reward_b


@wrong("token_logprobs", "no shift (and no cropping)")
def token_logprobs__full_length(logits, input_ids):
    logps = torch.log_softmax(logits.float(), dim=-1)
    return logps.gather(-1, input_ids[:, :, None]).squeeze(-1)


@wrong("last_token_index", "float instead of long")
def last_token_index__float(attention_mask):
    positions = torch.arange(attention_mask.shape[1], dtype=torch.float32)
    return (positions * (attention_mask != 0)).amax(-1)


@wrong("pairwise_reward_loss", "per-pair losses instead of their mean")
def pairwise_reward_loss__no_reduction(chosen_rewards, rejected_rewards, margin=None):
    gap = chosen_rewards - rejected_rewards - (0.0 if margin is None else margin)
    return -F.logsigmoid(gap)


@wrong("best_of_n_kl", "a tensor instead of a float")
def best_of_n_kl__tensor(n):
    if n < 1:
        raise ValueError("n must be at least 1")
    return torch.log(torch.tensor(float(n))) - (n - 1) / n


@wrong("kl_penalized_rewards", "score added to every masked token")
def kl_penalized_rewards__score_everywhere(scores, logprobs, ref_logprobs, mask, kl_coef):
    m = mask.to(logprobs.dtype)
    return -kl_coef * (logprobs - ref_logprobs) * m + scores[:, None] * m


@wrong("masked_mean", "sum instead of mean")
def masked_mean__sum(x, mask):
    return (x * mask).sum()


@wrong("gae_advantages", "not zero outside the mask")
def gae_advantages__returns_unmasked(rewards, values, mask, gamma, lam):
    values = values * mask                   # no value in padding, but the recursion runs over the whole row
    advantages = torch.zeros_like(rewards)
    next_adv, next_value = torch.zeros_like(rewards[:, 0]), torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = delta + gamma * lam * next_adv
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, advantages + values


@wrong("ppo_policy_loss", ">= instead of > in the clip fraction")
def ppo_policy_loss__ge_clipfrac(logprobs, old_logprobs, advantages, mask, clip_range):
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = (torch.maximum(pg1, pg2) * mask).sum() / mask.sum()
    return loss, ((pg2 >= pg1).to(mask.dtype) * mask).sum() / mask.sum()


@wrong("ppo_policy_loss", "clip fraction with the mask ignored")
def ppo_policy_loss__clipfrac_unmasked(logprobs, old_logprobs, advantages, mask, clip_range):
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = (torch.maximum(pg1, pg2) * mask).sum() / mask.sum()
    return loss, (pg2 > pg1).to(mask.dtype).mean()


@wrong("ppo_value_loss", "clip on the wrong term: old_values not added back")
def ppo_value_loss__clip_delta_only(values, old_values, returns, mask, clip_range):
    mask = mask.to(values.dtype)
    clipped = torch.clamp(values - old_values, -clip_range, clip_range)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * (losses * mask).sum() / mask.sum()


@wrong("dpo_loss", "chosen and rejected rewards swapped")
def dpo_loss__rewards_swapped(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    loss = -F.logsigmoid(beta * (chosen - rejected)).mean()
    return loss, beta * rejected.detach(), beta * chosen.detach()


@wrong("dpo_preference_probability", "log-probability instead of probability")
def dpo_preference_probability__log(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return F.logsigmoid(beta * h)


@wrong("cdpo_loss", "second term with the wrong sign")
def cdpo_loss__second_sign(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, label_smoothing):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    e = label_smoothing
    return (-(1 - e) * F.logsigmoid(beta * h) + e * F.logsigmoid(-beta * h)).mean()


@wrong("ipo_loss", "sum instead of mean")
def ipo_loss__sum(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau):
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return ((h - 1 / (2 * tau)) ** 2).sum()


@wrong("group_relative_advantages", "eps inside the square root")
def group_relative_advantages__eps_in_sqrt(rewards, eps=1e-6):
    if rewards.shape[1] < 2:
        raise ValueError("each group needs at least two samples")
    centred = rewards - rewards.mean(1, keepdim=True)
    return centred / torch.sqrt(rewards.var(1, keepdim=True) + eps)


# ============================================================ right values, broken gradient
@wrong("pairwise_reward_loss", "rebuilt with torch.tensor (no gradient)")
def pairwise_reward_loss__no_grad(chosen_rewards, rejected_rewards, margin=None):
    gap = chosen_rewards - rejected_rewards - (0.0 if margin is None else margin)
    return torch.tensor(-F.logsigmoid(gap).mean().item(), dtype=gap.dtype)


@wrong("sequence_logprob", "computed under torch.no_grad")
def sequence_logprob__no_grad(token_logps, completion_mask, average=False):
    with torch.no_grad():
        mask = completion_mask[:, 1:].to(token_logps.dtype)
        total = (token_logps * mask).sum(-1)
        return total / mask.sum(-1) if average else total


@wrong("masked_whiten", "statistics detached from the graph")
def masked_whiten__detached_stats(x, mask, shift_mean=True):
    mask = mask.to(x.dtype)
    mean = ((x * mask).sum() / mask.sum()).item()
    var = (((x - mean) ** 2 * mask).sum() / (mask.sum() - 1)).item()
    out = (x - mean) / math.sqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


# ============================================================ kl_estimators (notebook 07)
@wrong("kl_estimators", "k2 without the 1/2")
def kl_estimators__k2_no_half(logprobs, ref_logprobs, mask):
    m = mask.to(logprobs.dtype)
    log_r = (ref_logprobs - logprobs) * m
    return -log_r, log_r ** 2, (torch.exp(log_r) - 1 - log_r) * m


@wrong("kl_estimators", "k3 with the ratio inverted")
def kl_estimators__k3_inverted(logprobs, ref_logprobs, mask):
    m = mask.to(logprobs.dtype)
    log_r = (ref_logprobs - logprobs) * m
    return -log_r, 0.5 * log_r ** 2, (torch.exp(-log_r) - 1 + log_r) * m


@wrong("kl_estimators", "not masked")
def kl_estimators__not_masked(logprobs, ref_logprobs, mask):
    log_r = ref_logprobs - logprobs
    return -log_r, 0.5 * log_r ** 2, torch.exp(log_r) - 1 - log_r


@wrong("kl_estimators", "k1 sign flipped")
def kl_estimators__k1_sign(logprobs, ref_logprobs, mask):
    m = mask.to(logprobs.dtype)
    log_r = (ref_logprobs - logprobs) * m
    return log_r, 0.5 * log_r ** 2, (torch.exp(log_r) - 1 - log_r) * m


# ============================================================ grpo_policy_loss (notebook 07)
@wrong("grpo_policy_loss", "always token_mean (DAPO)")
def grpo_policy_loss__always_token_mean(logprobs, old_logprobs, advantages, mask, clip_range, aggregation):
    if aggregation not in ("sequence_mean", "token_mean", "constant"):
        raise ValueError(aggregation)
    m = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    losses = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)) * m
    return losses.sum() / m.sum()


@wrong("grpo_policy_loss", "constant divides by the lengths")
def grpo_policy_loss__constant_by_lengths(logprobs, old_logprobs, advantages, mask, clip_range, aggregation):
    if aggregation not in ("sequence_mean", "token_mean", "constant"):
        raise ValueError(aggregation)
    m = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    losses = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)) * m
    if aggregation == "sequence_mean":
        return (losses.sum(1) / m.sum(1)).mean()
    return losses.sum() / m.sum()


@wrong("grpo_policy_loss", "an all-masked row divides 0 by 0")
def grpo_policy_loss__no_clamp(logprobs, old_logprobs, advantages, mask, clip_range, aggregation):
    if aggregation not in ("sequence_mean", "token_mean", "constant"):
        raise ValueError(aggregation)
    m = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    losses = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)) * m
    if aggregation == "sequence_mean":
        return (losses.sum(1) / m.sum(1)).mean()          # NaN when a row has no completion tokens
    if aggregation == "token_mean":
        return losses.sum() / m.sum()
    return losses.sum() / (m.shape[0] * m.shape[1])


@wrong("grpo_policy_loss", "min instead of max")
def grpo_policy_loss__min(logprobs, old_logprobs, advantages, mask, clip_range, aggregation):
    if aggregation not in ("sequence_mean", "token_mean", "constant"):
        raise ValueError(aggregation)
    m = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    losses = torch.minimum(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)) * m
    if aggregation == "sequence_mean":
        return (losses.sum(1) / m.sum(1)).mean()
    if aggregation == "token_mean":
        return losses.sum() / m.sum()
    return losses.sum() / (m.shape[0] * m.shape[1])


@wrong("grpo_policy_loss", "minus sign missing")
def grpo_policy_loss__sign(logprobs, old_logprobs, advantages, mask, clip_range, aggregation):
    if aggregation not in ("sequence_mean", "token_mean", "constant"):
        raise ValueError(aggregation)
    m = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    losses = torch.maximum(adv * ratio, adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)) * m
    if aggregation == "sequence_mean":
        return (losses.sum(1) / m.sum(1)).mean()
    if aggregation == "token_mean":
        return losses.sum() / m.sum()
    return losses.sum() / (m.shape[0] * m.shape[1])


@wrong("grpo_policy_loss", "clip on the wrong term: the log-ratio")
def grpo_policy_loss__clip_log_ratio(logprobs, old_logprobs, advantages, mask, clip_range, aggregation):
    if aggregation not in ("sequence_mean", "token_mean", "constant"):
        raise ValueError(aggregation)
    m = mask.to(logprobs.dtype)
    log_ratio = logprobs - old_logprobs
    adv = advantages[:, None]
    losses = torch.maximum(-adv * torch.exp(log_ratio), -adv * torch.exp(torch.clamp(log_ratio, -clip_range, clip_range))) * m
    if aggregation == "sequence_mean":
        return (losses.sum(1) / m.sum(1)).mean()
    if aggregation == "token_mean":
        return losses.sum() / m.sum()
    return losses.sum() / (m.shape[0] * m.shape[1])


@wrong("kl_estimators", "only calls the reference")
def kl_estimators__delegates(logprobs, ref_logprobs, mask):
    from alignlab import reference
    return reference.kl_estimators(logprobs, ref_logprobs, mask)


@wrong("grpo_policy_loss", "only calls the reference")
def grpo_policy_loss__delegates(logprobs, old_logprobs, advantages, mask, clip_range, aggregation):
    from alignlab import reference
    return reference.grpo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range, aggregation)
