"""Honest answers written independently of the course's reference, solutions and catalogue (in the styles learners
use), to measure how often the similarity report flags honest work. Each value is an answer cell's source."""

HONEST = {
    "log_softmax": [
        """import torch

def log_softmax(logits):
    z = logits.float() if logits.dtype != torch.float64 else logits
    biggest, _ = torch.max(z, dim=-1, keepdim=True)
    lse = biggest + torch.log(torch.sum(torch.exp(z - biggest), dim=-1, keepdim=True))
    return z - lse
""",
        """import torch

def log_softmax(logits):
    # stable version: subtract the max first
    work = logits.to(torch.float32) if logits.dtype in (torch.float16, torch.bfloat16) else logits
    m = work.amax(-1, keepdim=True)
    return (work - m) - (work - m).exp().sum(-1, keepdim=True).log()
""",
    ],
    "bradley_terry_probability": [
        """import torch

def bradley_terry_probability(reward_a, reward_b):
    return torch.sigmoid(reward_a.float() - reward_b.float())
""",
        """import torch

def bradley_terry_probability(reward_a, reward_b):
    diff = torch.as_tensor(reward_a, dtype=torch.float32) - torch.as_tensor(reward_b, dtype=torch.float32)
    return 1 / (1 + torch.exp(-diff))
""",
    ],
    "sequence_logprob": [
        """import torch

def sequence_logprob(token_logps, completion_mask, average=False):
    weights = completion_mask[:, 1:].to(token_logps.dtype)
    total = (token_logps * weights).sum(dim=1)
    if average:
        total = total / weights.sum(dim=1)
    return total
""",
    ],
    "masked_mean": [
        """import torch

def masked_mean(x, mask):
    m = mask.to(x.dtype)
    n = m.sum()
    if n == 0:
        raise ValueError("the mask selects nothing")
    return (x * m).sum() / n
""",
    ],
    "gae_advantages": [
        """import torch

def gae_advantages(rewards, values, mask, gamma, lam):
    m = mask.to(rewards.dtype)
    values = values * m
    rewards = rewards * m
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    running = torch.zeros(B, dtype=rewards.dtype)
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros(B, dtype=rewards.dtype)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        running = (delta + gamma * lam * running) * m[:, t]
        adv[:, t] = running
    returns = (adv + values) * m
    return adv, returns
""",
    ],
    "ppo_value_loss": [
        """import torch

def ppo_value_loss(values, old_values, returns, mask, clip_range):
    clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    worst = torch.max((values - returns) ** 2, (clipped - returns) ** 2)
    m = mask.float()
    return 0.5 * (worst * m).sum() / m.sum()
""",
    ],
    "dpo_loss": [
        """import torch
import torch.nn.functional as F

def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return loss, chosen.detach(), rejected.detach()
""",
        """import torch
import torch.nn.functional as F

def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    logratio_w = policy_chosen_logps - ref_chosen_logps
    logratio_l = policy_rejected_logps - ref_rejected_logps
    losses = F.softplus(-beta * (logratio_w - logratio_l))
    return losses.mean(), (beta * logratio_w).detach(), (beta * logratio_l).detach()
""",
    ],
    "ipo_loss": [
        """import torch

def ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau):
    h = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
    return ((h - 1.0 / (2.0 * tau)) ** 2).mean()
""",
    ],
    "group_relative_advantages": [
        """import torch

def group_relative_advantages(rewards, eps=1e-6):
    if rewards.shape[1] < 2:
        raise ValueError("need at least two samples per prompt")
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + eps)
""",
    ],
    "kl_estimators": [
        """import torch

def kl_estimators(logprobs, ref_logprobs, mask):
    m = mask.to(logprobs.dtype)
    log_r = ref_logprobs - logprobs
    k1 = -log_r * m
    k2 = 0.5 * log_r.pow(2) * m
    k3 = (log_r.exp() - 1 - log_r) * m
    return k1, k2, k3
""",
    ],
}
