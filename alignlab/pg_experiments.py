"""Two studies of the policy-gradient notebook, computed exactly on the enumerated arithmetic world.

- ``reuse_study``: several updates on one batch of samples. At every update it compares, with the exact
  gradient of the expected reward, the expected gradient (over the sampling policy, by enumeration) of the
  surrogate that reuses the samples as if they were fresh, of PPO's per-token ratio surrogate, and of the
  sequence-level importance-weighted one; and it runs the same updates with PPO's clipping.
- ``kl_placement``: k1, k2, k3 (Schulman's KL estimators), each in the loss or in the reward, on whole
  sequences or per token: the exact expected gradient of each placement against the exact gradients of
  KL(pi || pi_ref) and of KL(pi_ref || pi).
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import Tensor

from . import arithmetic as ar
from . import reference
from .grpo import completion_token_logps
from .models import frozen_copy
from .policy_gradient import (COMPLETION_MASK, N_COMPLETIONS, answer_index, cosine, distribution, expected_reward,
                              flat_grad, token_logprobs)


def _support(probs: Sequence[Tensor], threshold: float, extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The completions whose probability under any of ``probs`` (each (P, N)) exceeds ``threshold``, plus ``extra``
    (P, k) indices: (index (P, n) padded with the row's first kept index, valid (P, n) bool)."""
    keep = torch.zeros_like(probs[0], dtype=torch.bool)
    for p in probs:
        keep |= p > threshold
    if extra is not None:
        keep.scatter_(1, extra, True)
    n = int(keep.sum(1).max())
    index = torch.zeros(keep.shape[0], n, dtype=torch.long)
    valid = torch.zeros(keep.shape[0], n, dtype=torch.bool)
    for row, k in enumerate(keep):
        kept = k.nonzero().squeeze(1)
        index[row, :len(kept)], index[row, len(kept):], valid[row, :len(kept)] = kept, kept[0], True
    return index, valid


def _clipped_loss(logprobs, old_logprobs, advantages, mask, clip_range):
    """PPO's clipped surrogate per token, summed over each sequence's tokens, averaged over sequences."""
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    per_token = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range))
    return (per_token * mask).sum(-1).mean()


def reuse_study(policy, problems: Sequence[ar.Problem], loss_fn: Callable, advantages_fn: Callable, updates: int = 8,
                group_size: int = 8, learning_rate: float = 3e-4, clip_range: float = 0.2, threshold: float = 1e-7,
                seed: int = 0) -> dict:
    """Take ``updates`` Adam steps on ONE batch sampled from ``policy`` (left unchanged), twice: with ``loss_fn``
    (REINFORCE, the samples reused as if fresh) and with PPO's clipped ratio surrogate.

    Returns ``identity`` (the largest difference between the gradients of -A * ratio and of the REINFORCE loss
    before the first update, and the size of that gradient) and ``rows``, one per (run, update k): ``kl`` (exact
    KL(pi_k || pi_old) per problem), ``reward`` (exact expected reward), ``clip_fraction`` (batch tokens whose
    ratio left [1-c, 1+c]) and, for the reuse run, the cosine to the exact gradient of the expected gradients of
    ``naive`` (A * log pi_k), ``token_ratio`` (A * sum_t pi_k/pi_old per token) and ``sequence_ratio``
    (A * pi_k(y)/pi_old(y)), the expectations over pi_old with A(y) = reward - E_old[reward].
    """
    old = frozen_copy(policy)
    P, G = len(problems), group_size
    prompts, comp = ar.sample(old, problems, n=G, generator=torch.Generator().manual_seed(seed))
    mask = ar.completion_mask(comp)                                                    # (B, 4)
    rewards = ar.rewards_for(problems, comp, G)                                        # (P, G)
    baseline = (rewards - advantages_fn(rewards)).reshape(-1)                          # (B,) e.g. RLOO's
    advantages = rewards.reshape(-1) - baseline
    with torch.no_grad():
        old_lp = completion_token_logps(old, prompts, comp) * mask                        # (B, 4)
    pi_old = distribution(old, problems, threshold)
    index, valid = _support([pi_old], threshold)
    with torch.no_grad():
        old_tok = token_logprobs(old, problems, index).double()                       # (P, n, 4)
    w_old = old_tok.sum(-1).exp() * valid                                              # pi_old(y), 0 on padding
    answers = torch.tensor([answer_index(p) for p in problems])
    r = (index == answers[:, None]).double()
    a = (r - (w_old * r).sum(1, keepdim=True)) * valid                                 # A(y) = r(y) - E_old[r]
    tmask = COMPLETION_MASK[index].double()

    probe = copy.deepcopy(old).requires_grad_(True)
    lp0 = completion_token_logps(probe, prompts, comp) * mask
    g_reinforce = flat_grad(loss_fn(lp0, rewards.reshape(-1), mask, baseline), probe, retain_graph=True)
    g_ratio = flat_grad(-(advantages[:, None] * torch.exp(lp0 - old_lp) * mask).sum(-1).mean(), probe)
    identity = {"max_difference": float((g_reinforce - g_ratio).abs().max()), "gradient_norm": float(g_reinforce.norm())}

    rows = []
    for run in ("reuse", "clipped"):
        theta = copy.deepcopy(old).requires_grad_(True)
        optimizer = torch.optim.Adam(theta.parameters(), lr=learning_rate)
        for k in range(updates + 1):
            tok = token_logprobs(theta, problems, index).double()                     # (P, n, 4) at theta_k
            seq = tok.sum(-1)
            with torch.no_grad():
                pi_k = seq.exp() * valid
                row = {"run": run, "update": k, "kl": float((pi_k * (seq - old_tok.sum(-1))).sum() / P),
                       "coverage": float(pi_k.sum(1).min())}
            if run == "reuse":
                g_exact = flat_grad(expected_reward(theta, problems), theta)
                surrogates = {"naive": (w_old * a * seq).sum() / P,
                              "token_ratio": (w_old * a * (torch.exp(tok - old_tok) * tmask).sum(-1)).sum() / P,
                              "sequence_ratio": (w_old * a * torch.exp(seq - old_tok.sum(-1))).sum() / P}
                for name, s in surrogates.items():
                    row[name] = cosine(flat_grad(s, theta, retain_graph=True), g_exact)
            lp = completion_token_logps(theta, prompts, comp) * mask
            ratio = torch.exp(lp.detach() - old_lp)
            row["clip_fraction"] = float((((ratio - 1).abs() > clip_range).double() * mask).sum() / mask.sum())
            with torch.no_grad():
                row["reward"] = float(expected_reward(theta, problems))
            rows.append(row)
            if k == updates:
                break
            if run == "reuse":
                loss = loss_fn(lp, rewards.reshape(-1), mask, baseline)
            else:
                loss = _clipped_loss(lp, old_lp, advantages, mask, clip_range)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {"identity": identity, "rows": rows, "batch": P * G}


PLACEMENTS = [(k, where, level) for k in ("k1", "k2", "k3") for where in ("loss", "reward") for level in ("sequence", "token")]


def kl_placement(policy, ref_policy, problems: Sequence[ar.Problem], threshold: float = 1e-8) -> dict:
    """The exact expected gradient of each placement of each KL estimator, against the exact KL gradients.

    An estimator k is computed from log r = log pi_ref - log pi at completions y sampled from pi, either on the
    whole sequence (log r summed over its tokens) or per token and then summed. "loss": the surrogate is
    E_pi[k] with the samples held fixed and k differentiated (as when k is added to the loss); "reward": k is
    detached and weighs grad log pi(y), as REINFORCE does with a reward (here the penalty, -k, in the reward).
    Expectations over pi are sums over every completion above ``threshold`` (``left_out`` is the mass below).
    Returns ``kl`` (exact KL(pi || pi_ref)), ``reverse_kl`` (exact KL(pi_ref || pi)), ``left_out`` and ``rows``:
    estimator, placement, level, ``value`` (E_pi of the estimator), ``norm_kl`` (|g| / |t|), ``cos_kl`` / ``scale_kl`` (cosine and
    <g, t> / |t|^2 against t = grad KL(pi || pi_ref)), ``cos_reverse`` / ``scale_reverse`` (against grad KL(pi_ref || pi)).
    """
    P = len(problems)
    pi, ref = distribution(policy, problems, threshold), distribution(ref_policy, problems, threshold)
    index, valid = _support([pi, ref], threshold)
    left_out = max(float(1 - (pi.gather(1, index) * valid).sum(1).min()), float(1 - (ref.gather(1, index) * valid).sum(1).min()))
    tok = token_logprobs(policy, problems, index).double()                            # (P, n, 4)
    with torch.no_grad():
        ref_tok = token_logprobs(ref_policy, problems, index).double()
    mask = COMPLETION_MASK[index].double()
    seq, ref_seq = tok.sum(-1), ref_tok.sum(-1)                                       # (P, n) log pi(y), log pi_ref(y)
    v = valid.double()
    w = seq.detach().exp() * v                                                         # pi(y), held fixed
    forward = (seq.exp() * (seq - ref_seq) * v).sum() / P                              # KL(pi || pi_ref), differentiable
    backward = (ref_seq.exp() * (ref_seq - seq) * v).sum() / P                         # KL(pi_ref || pi)
    t_kl, t_rev = flat_grad(forward, policy, retain_graph=True), flat_grad(backward, policy, retain_graph=True)
    ones = torch.ones_like(seq).reshape(-1, 1)
    per_seq = reference.kl_estimators(seq.reshape(-1, 1), ref_seq.reshape(-1, 1), ones)            # each (P*n, 1)
    per_tok = reference.kl_estimators(tok.reshape(-1, ar.MAX_NEW), ref_tok.reshape(-1, ar.MAX_NEW), mask.reshape(-1, ar.MAX_NEW))
    rows = []
    for k, where, level in PLACEMENTS:
        i = int(k[1]) - 1
        est = (per_seq[i] if level == "sequence" else per_tok[i]).sum(-1).view(P, -1)   # (P, n) estimate for each y
        surrogate = (w * est).sum() / P if where == "loss" else (w * est.detach() * seq).sum() / P
        g = flat_grad(surrogate, policy, retain_graph=True)
        rows.append({"estimator": k, "placement": where, "level": level, "value": float((w * est.detach()).sum() / P),
                     "norm_kl": float(g.norm() / t_kl.norm()), "cos_kl": cosine(g, t_kl), "scale_kl": float(g @ t_kl / (t_kl @ t_kl)),
                     "cos_reverse": cosine(g, t_rev), "scale_reverse": float(g @ t_rev / (t_rev @ t_rev))})
    return {"kl": float(forward.detach()), "reverse_kl": float(backward.detach()), "left_out": left_out, "rows": rows,
            "completions": int(valid.sum()), "enumerated": P * N_COMPLETIONS}
