"""Gold reward and sequence KL of a policy on held-out prompts: the two axes of every frontier plot.

>>> ev = evaluate_policy(policy, reference, tokenizer, gold, load_prompts("test"), n=256)
>>> ev["gold"], ev["kl"]     # mean P(positive) of prompt + completion, mean sequence KL in nats

Sequence KL = sum over completion tokens of (log pi - log pi_ref), on the
policy's own samples at temperature 1, averaged over prompts (a Monte Carlo
estimate of KL(pi || pi_ref); single samples can be negative, the mean is not
in expectation). Seeded, so two policies are compared on the same prompts.
"""
from __future__ import annotations

import torch

from .rewards import gold_scores
from .rollout import sample, sequence_token_logprobs


@torch.no_grad()
def evaluate_policy(policy, reference, tokenizer, gold, prompts, n: int = 256, max_new_tokens: int = 24,
                    seed: int = 0, batch_size: int = 128, n_samples: int = 4) -> dict:
    """Sample one completion per prompt (temperature 1) and measure gold reward and KL to ``reference``.

    Args:
        policy, reference: causal LMs sharing the tokenizer (a PolicyWithValue is unwrapped).
        tokenizer: decodes prompt + completion for the gold reward.
        gold: callable texts -> (B,) P(positive), e.g. ``alignlab.rewards.load_gold()``.
        prompts: dicts with ``prompt_ids`` (e.g. ``load_prompts("test")``); the first ``n`` are used.
        n, max_new_tokens, seed: how many prompts, completion length, sampling seed.

    Returns:
        dict: ``gold`` (mean P(positive)), ``kl`` (mean sequence KL, nats),
        ``gold_std``, ``kl_std``, ``length`` (mean completion tokens),
        ``eos_rate``, ``n``, and ``samples`` (the first ``n_samples`` prompt +
        completion texts). Train/eval mode of both models is restored.
    """
    prompts = list(prompts)[:n]
    if len(prompts) == 0:
        raise ValueError("evaluate_policy needs at least one prompt (n >= 1 and a non-empty prompt list)")
    model = getattr(policy, "policy", policy)
    ref = getattr(reference, "policy", reference)
    modes = (model.training, ref.training)
    model.eval()
    ref.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    golds, kls, lengths, eos, texts = [], [], [], [], []
    try:
        for i in range(0, len(prompts), batch_size):
            chunk = [p["prompt_ids"] for p in prompts[i:i + batch_size]]
            ro = sample(model, chunk, max_new_tokens, temperature=1.0, eos_id=tokenizer.eos_token_id,
                        pad_id=tokenizer.pad_token_id, generator=gen)
            ref_lp = sequence_token_logprobs(ref, ro.input_ids.to(next(ref.parameters()).device),
                                             ro.attention_mask.to(next(ref.parameters()).device)).to(device)
            m = ro.completion_mask[:, 1:].float()                                     # (B, T-1)
            kls.append(((ro.logprobs - ref_lp) * m).sum(-1).cpu())                    # (B,)
            full, scores = gold_scores(gold, tokenizer, chunk, ro.completion_ids)
            golds.append(scores)                                                      # (B,)
            lengths.append(ro.completion_mask.sum(-1).float().cpu())
            eos.append(ro.ended_with_eos.float().cpu())
            texts.extend(full)
    finally:
        model.train(modes[0])
        ref.train(modes[1])
    g, k = torch.cat(golds), torch.cat(kls)
    return {"gold": g.mean().item(), "kl": k.mean().item(), "gold_std": g.std().item() if len(g) > 1 else 0.0,
            "kl_std": k.std().item() if len(k) > 1 else 0.0, "length": torch.cat(lengths).mean().item(),
            "eos_rate": torch.cat(eos).mean().item(), "n": len(g), "samples": texts[:n_samples]}
